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
