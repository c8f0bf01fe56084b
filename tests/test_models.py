"""The offline EfficientNet-Lite0, class names, the optional torchvision models, and the stages of an EfficientNet (chapter 00, Setup; chapter 05, Sanity Checks)."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torch import nn
from toy_models import TinyEfficientNet

import gradsal
from gradsal import models


def test_lite0_is_ready_for_explanation(lite0):
    assert not lite0.training and not any(m.training for m in lite0.modules())
    assert not any(p.requires_grad for p in lite0.parameters())
    assert isinstance(lite0[0], gradsal.PixelNormalize)
    assert sum(p.numel() for p in lite0.parameters()) == 4_652_008
    assert any(isinstance(m, torch.nn.ReLU6) for m in lite0.modules())


def test_loading_prints_nothing(capsys):
    gradsal.load_model()
    out = capsys.readouterr()
    assert out.out == ""


def test_normalisation_matches_the_training_preprocessing(lite0):
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(lite0[0](x), (x * 255 - 127) / 128)


def test_predictions_on_bundled_photos(lite0):
    cats = {"tiger cat", "tabby", "Egyptian cat"}
    assert gradsal.top_k(lite0, gradsal.load_image("cat"), 1)[0][0][0] in cats
    label, p = gradsal.top_k(lite0, gradsal.load_image("coffee"), 1)[0][0]
    assert label == "espresso" and p > 0.9


def test_top_k_batch_and_errors(lite0):
    x = torch.stack([gradsal.load_image("cat"), gradsal.load_image("flower")])
    preds = gradsal.top_k(lite0, x, 3)
    assert len(preds) == 2 and all(len(p) == 3 for p in preds)
    assert preds[1][0][0] == "daisy"
    with pytest.raises(ValueError, match="k must be between 1 and 1000"):
        gradsal.top_k(lite0, x, 0)


def test_categories():
    names = gradsal.categories()
    assert (
        len(names) == 1000
        and names[281] == "tabby"
        and names[967] == "espresso"
    )
    names.append("mutated")
    assert len(gradsal.categories()) == 1000  # a fresh list each time


def test_categories_are_torchvisions_imagenet_names():
    from torchvision.models import MobileNet_V2_Weights

    meta = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    assert gradsal.categories() == list(meta)


def test_unknown_model_name():
    with pytest.raises(
        ValueError, match="unknown model 'alexnet'; expected one of"
    ):
        gradsal.load_model("alexnet")
    with pytest.raises(TypeError, match="model name must be a string"):
        gradsal.load_model(3)


def test_random_weights_need_no_download():
    m = gradsal.load_model("efficientnet_lite0", pretrained=False)
    assert not m.training and not any(p.requires_grad for p in m.parameters())
    m2 = gradsal.load_model("mobilenet_v2", pretrained=False)
    assert m2(torch.rand(1, 3, 64, 64)).shape == (1, 1000)


def test_torchvision_weights_offline_fail_fast_with_the_default_named(
    monkeypatch,
):
    # No network in tests: make the download fail the way an offline machine does.
    import torchvision

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError(
            "[Errno -3] Temporary failure in name resolution"
        )

    monkeypatch.setattr(
        torchvision.models.WeightsEnum, "get_state_dict", offline
    )
    with pytest.raises(RuntimeError) as info:
        gradsal.load_model("resnet50")
    message = str(info.value)
    assert (
        "offline" in message
        and "efficientnet_lite0" in message
        and "resnet50" in message
    )


def test_available_models_lists_the_default_first():
    assert (
        gradsal.available_models()[0]
        == models.DEFAULT_MODEL
        == "efficientnet_lite0"
    )


# ---------------------------------------------------------------------------
# the stages of an EfficientNet (the steps of chapter 05's cascading randomisation)


def test_efficientnet_stages_order_and_grouping() -> None:
    net = TinyEfficientNet()
    wrapped = nn.Sequential(nn.Identity(), net)
    by_stage = models.efficientnet_stages(wrapped)
    labels = [label for label, _ in by_stage]
    # output widths 4,6,6,8,8 -> groups [0], [1,2], [3,4], visited last first
    assert labels == [
        "fc",
        "head",
        "blocks 3-4",
        "blocks 1-2",
        "block 0",
        "stem",
    ]
    assert by_stage[0][1] == ("1._fc",)
    assert by_stage[1][1] == ("1._conv_head", "1._bn1")
    assert by_stage[-1][1] == ("1._conv_stem", "1._bn0")
    by_block = models.efficientnet_stages(net, by="block")
    assert [label for label, _ in by_block][2:-1] == [
        "block 4",
        "block 3",
        "block 2",
        "block 1",
        "block 0",
    ]
    with pytest.raises(ValueError, match="no EfficientNet"):
        models.efficientnet_stages(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="by must be"):
        models.efficientnet_stages(net, by="layer")


def test_lite0_has_seven_stages(lite0):
    stages = models.efficientnet_stages(lite0)
    assert [label for label, _ in stages][:2] == ["fc", "head"] and stages[-1][
        0
    ] == "stem"
    assert len(stages) == 7 + 3
    blocks = [name for _, names in stages[2:-1] for name in names]
    assert (
        len(blocks)
        == len(models.efficientnet_stages(lite0, by="block")) - 3
        == len(set(blocks))
    )


# ---------------------------------------------------------------------------
# float64 copies (chapters 03 and 04)


@pytest.mark.parametrize(
    "kernel, stride, padding, dilation, bias",
    [
        (3, 1, 1, 1, True),
        (3, 2, 0, 1, False),
        (5, 2, 2, 1, True),
        (3, 1, 2, 2, True),
    ],
)
def test_depthwise_by_shifts_is_the_grouped_convolution(
    kernel, stride, padding, dilation, bias
):
    g = torch.Generator().manual_seed(kernel + stride + padding)
    x = torch.randn(2, 4, 11, 10, dtype=torch.float64, generator=g)
    w = torch.randn(4, 1, kernel, kernel, dtype=torch.float64, generator=g)
    b = torch.randn(4, dtype=torch.float64, generator=g) if bias else None
    inputs = [
        t.clone().requires_grad_(True) for t in (x, w) + ((b,) if bias else ())
    ]
    ours = models.depthwise_conv2d_by_shifts(
        inputs[0],
        inputs[1],
        inputs[2] if bias else None,
        stride,
        padding,
        dilation,
    )
    torch_in = [t.detach().clone().requires_grad_(True) for t in inputs]
    theirs = torch.nn.functional.conv2d(
        torch_in[0],
        torch_in[1],
        torch_in[2] if bias else None,
        stride,
        padding,
        dilation,
        groups=4,
    )
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=1e-13)
    up = torch.randn(theirs.shape, dtype=torch.float64, generator=g)
    for a, t in zip(
        torch.autograd.grad((ours * up).sum(), inputs),
        torch.autograd.grad((theirs * up).sum(), torch_in),
    ):
        torch.testing.assert_close(a, t, rtol=1e-12, atol=1e-12)


def test_float64_copy_agrees_with_the_plain_copy_and_leaves_the_model(
    lite0, monkeypatch
):
    import copy

    calls = []
    by_shifts = models.depthwise_conv2d_by_shifts
    monkeypatch.setattr(
        models,
        "depthwise_conv2d_by_shifts",
        lambda *a: calls.append(a[1].shape) or by_shifts(*a),
    )
    before = {k: v.clone() for k, v in lite0.state_dict().items()}
    model64 = models.float64_copy(lite0)
    plain = copy.deepcopy(lite0).double()
    x = gradsal.load_image("cat").double()[None].requires_grad_(True)
    ours = model64(x)[0, 281]
    (g_ours,) = torch.autograd.grad(ours, x)
    theirs = plain(x)[0, 281]
    (g_theirs,) = torch.autograd.grad(theirs, x)
    # every depthwise convolution (one per MBConv block) ran by shifts
    n_depthwise = sum(
        isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1
        for m in lite0.modules()
    )
    assert len(calls) == n_depthwise == 16
    assert ours.dtype == torch.float64
    ours, theirs = float(ours.detach()), float(theirs.detach())
    assert abs(ours - theirs) < 1e-12 * abs(theirs)
    assert float((g_ours - g_theirs).abs().max()) < 1e-11 * float(
        g_theirs.abs().max()
    )
    # the model is still float32 and unchanged
    assert all(
        torch.equal(v, before[k]) and v.dtype == before[k].dtype
        for k, v in lite0.state_dict().items()
    )
    assert next(lite0.parameters()).dtype == torch.float32


def test_float64_copy_mode_ends_with_every_call(tiny_cnn):
    model64 = models.float64_copy(tiny_cnn)
    stack_depth = torch._C._len_torch_function_stack
    model64(torch.rand(1, 3, 8, 8, dtype=torch.float64))
    assert stack_depth() == 0
    with pytest.raises(RuntimeError):
        model64(torch.rand(1, 5, 8, 8, dtype=torch.float64))  # wrong channels
    assert stack_depth() == 0
    with pytest.raises(TypeError, match="torch.nn.Module"):
        models.float64_copy(lambda x: x)


def test_conv2d_arguments_reads_calls_by_name():
    from gradsal.core import conv2d_arguments

    x, w = torch.zeros(1, 2, 5, 5), torch.zeros(2, 1, 3, 3)
    bound = conv2d_arguments((x, w, None, 2), {"groups": 2})
    assert bound["input"] is x and bound["weight"] is w
    assert (bound["stride"], bound["padding"], bound["groups"]) == (2, 0, 2)
    assert bound["dilation"] == 1 and bound["bias"] is None
    assert conv2d_arguments((x,), {}) is None  # no weight
    assert conv2d_arguments((x, w), {"scale": 2}) is None  # not conv2d's
    assert conv2d_arguments((x, w, None, 1, 0, 1, 1, 9), {}) is None


def test_int_pair_reads_conv_geometry():
    from gradsal.core import int_pair

    assert int_pair(2) == (2, 2)
    assert int_pair((1, 3)) == (1, 3) and int_pair([4]) == (4, 4)
    assert int_pair("same") is None and int_pair((1, 2, 3)) is None
    assert int_pair(True) is None and int_pair((1.0, 2)) is None


def test_float64_mode_leaves_string_padding_to_torch(monkeypatch):
    calls = []
    monkeypatch.setattr(
        models, "depthwise_conv2d_by_shifts", lambda *a: calls.append(a)
    )
    conv = nn.Conv2d(3, 3, 3, groups=3, padding="same")
    model64 = models.float64_copy(conv)
    x = torch.rand(1, 3, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(model64(x), conv.double()(x))
    assert not calls
