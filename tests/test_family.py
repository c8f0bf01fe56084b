"""The wider family (chapter 07): Integrated Gradients, Guided Backprop, Grad-CAM.

Closed forms on models whose answer is known, and the libraries where their
conventions apply: Captum (IntegratedGradients, GuidedBackprop, LayerGradCam)
and pytorch-grad-cam (GradCAM). Where a library differs from gradsal, the test
shows by how much and why.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradsal
from gradsal.methods import quadrature

RULES = [
    "gausslegendre",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
]


class ReLUNet(nn.Module):
    """A small ReLU (or ReLU6) network on (B, 3, 8, 8) with functional and module activations."""

    def __init__(self, act: type[nn.Module] = nn.ReLU, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = act()
        self.fc1 = nn.Linear(4 * 8 * 8, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        h = self.act(self.conv(x) * 3)
        return self.fc2(F.relu(self.fc1(h.flatten(1))))


@pytest.fixture
def x_img():
    return torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(4))


# ---------------------------------------------------------------------------
# quadrature rules


@pytest.mark.parametrize("rule", RULES)
def test_quadrature_weights_add_up_to_one_and_nodes_lie_in_the_interval(rule):
    for n in (2, 3, 10, 50):
        nodes, weights = quadrature(n, rule)
        assert nodes.shape == weights.shape == (n,)
        assert (
            abs(weights.sum() - 1) < 1e-12
            and (nodes >= 0).all()
            and (nodes <= 1).all()
        )


def test_quadrature_integrates_polynomials_as_its_order_says():
    def f(t):  # its integral on [0, 1] is 1 - 1 = 0
        return 5 * t**4 - 2 * t

    nodes, weights = quadrature(3, "gausslegendre")  # exact up to degree 5
    assert abs((weights * f(nodes)).sum()) < 1e-12
    errors = {}
    for rule in ("riemann_left", "riemann_middle", "riemann_trapezoid"):
        e = [
            abs((w * f(a)).sum())
            for a, w in (quadrature(n, rule) for n in (40, 80))
        ]
        errors[rule] = e[0] / e[1]
    assert 1.8 < errors["riemann_left"] < 2.2  # first order
    assert (
        3.6 < errors["riemann_middle"] < 4.4
        and 3.6 < errors["riemann_trapezoid"] < 4.4
    )  # second order


# ---------------------------------------------------------------------------
# Integrated Gradients: closed forms


@pytest.mark.parametrize("rule", RULES)
def test_ig_of_a_linear_model_is_x_minus_b_times_the_weight_row(
    linear_model, image_batch, rule
):
    w = linear_model[1].weight.detach()
    base = torch.full_like(image_batch, 0.3)
    for n in (2, 7):
        ig, delta = gradsal.integrated_gradients(
            linear_model,
            image_batch,
            [0, 1, 2],
            baseline=base,
            n_steps=n,
            method=rule,
            return_delta=True,
        )
        for i, c in enumerate([0, 1, 2]):
            torch.testing.assert_close(
                ig[i],
                (image_batch[i] - base[i]) * w[c].view(3, 8, 8),
                atol=1e-6,
                rtol=1e-5,
            )
        assert float(delta.abs().max()) < 1e-5


def test_ig_of_a_cubic_is_a_times_x3_minus_b3(cubic_model):
    x = torch.linspace(-1, 1, 48, dtype=torch.float64).view(3, 4, 4)
    b = torch.linspace(0.5, -0.2, 48, dtype=torch.float64).view(3, 4, 4)
    a = cubic_model.a.detach()[1].view(3, 4, 4)
    # the integrand 3 a (b + t (x - b))^2 is quadratic in t: two Gauss-Legendre nodes are exact
    ig = gradsal.integrated_gradients(cubic_model, x, 1, baseline=b, n_steps=2)
    torch.testing.assert_close(ig, a * (x**3 - b**3), atol=1e-12, rtol=1e-10)
    # the midpoint rule converges to it at second order
    errs = [
        float(
            (
                gradsal.integrated_gradients(
                    cubic_model,
                    x,
                    1,
                    baseline=b,
                    n_steps=n,
                    method="riemann_middle",
                )
                - a * (x**3 - b**3)
            )
            .abs()
            .max()
        )
        for n in (10, 20)
    ]
    assert 3.9 < errs[0] / errs[1] < 4.1


def test_ig_completeness_gap_on_a_relu_network_shrinks_with_n_steps(x_img):
    model = ReLUNet().eval()
    gaps = []
    for n in (4, 16, 64, 256):
        _, delta = gradsal.integrated_gradients(
            model.double(),
            x_img.double(),
            0,
            n_steps=n,
            method="riemann_middle",
            return_delta=True,
        )
        gaps.append(abs(float(delta)))
    assert gaps[-1] < 0.2 * gaps[0] and gaps[-1] < 1e-3
    model.float()


def test_ig_baselines_and_bad_arguments(linear_model, image_batch):
    x = image_batch[0]
    w = linear_model[1].weight.detach()[2].view(3, 8, 8)
    torch.testing.assert_close(
        gradsal.integrated_gradients(linear_model, x, 2),
        x * w,
        atol=1e-6,
        rtol=1e-5,
    )
    torch.testing.assert_close(
        gradsal.integrated_gradients(linear_model, x, 2, baseline=0.5),
        (x - 0.5) * w,
        atol=1e-6,
        rtol=1e-5,
    )
    shared = gradsal.integrated_gradients(
        linear_model, image_batch, 2, baseline=torch.full((3, 8, 8), 0.5)
    )
    torch.testing.assert_close(
        shared[1], (image_batch[1] - 0.5) * w, atol=1e-6, rtol=1e-5
    )
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        gradsal.integrated_gradients(linear_model, x, n_steps=0)
    with pytest.raises(ValueError, match="method must be one of"):
        gradsal.integrated_gradients(linear_model, x, method="simpson")
    with pytest.raises(ValueError, match="trapezoid rule needs n_steps >= 2"):
        gradsal.integrated_gradients(
            linear_model, x, n_steps=1, method="riemann_trapezoid"
        )
    with pytest.raises(ValueError, match="baseline must have the shape of x"):
        gradsal.integrated_gradients(
            linear_model, x, baseline=torch.zeros(3, 4, 4)
        )
    with pytest.raises(ValueError, match="baseline must be a finite number"):
        gradsal.integrated_gradients(linear_model, x, baseline="blur")


def test_ig_does_not_depend_on_the_batch_size_or_precision(
    tiny_cnn, image_batch
):
    kw = dict(target=[0, 1, 2], n_steps=9, baseline=0.2)
    a = gradsal.integrated_gradients(
        tiny_cnn, image_batch, batch_size=9, precision="float32", **kw
    )
    for bs in (1, 4):
        for precision in ("auto", "float32"):
            b = gradsal.integrated_gradients(
                tiny_cnn, image_batch, batch_size=bs, precision=precision, **kw
            )
            torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)


def test_smoothgrad_of_ig_applies_ig_to_each_noisy_copy(tiny_cnn, x_img):
    from gradsal.methods import gaussian_noise, noise_sigma

    method = functools.partial(
        gradsal.integrated_gradients, n_steps=6, baseline=0.1
    )
    pool = gradsal.noisy_attributions(
        tiny_cnn,
        x_img,
        1,
        method=method,
        n_samples=3,
        noise_level=0.2,
        generator=8,
    )
    copies = x_img + noise_sigma(x_img, 0.2) * gaussian_noise(
        x_img.shape, 3, torch.Generator().manual_seed(8)
    )
    direct = gradsal.integrated_gradients(
        tiny_cnn, copies, 1, n_steps=6, baseline=0.1
    )
    torch.testing.assert_close(pool, direct, atol=1e-6, rtol=1e-5)
    sg = gradsal.smoothgrad(
        tiny_cnn,
        x_img,
        1,
        method=method,
        n_samples=3,
        noise_level=0.2,
        generator=8,
        mode="abs",
    )
    torch.testing.assert_close(sg, direct.abs().mean(0), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="return_delta"):
        gradsal.smoothgrad(
            tiny_cnn,
            x_img,
            method=functools.partial(
                gradsal.integrated_gradients, return_delta=True
            ),
            n_samples=2,
        )


# ---------------------------------------------------------------------------
# Integrated Gradients against Captum


@pytest.mark.parametrize("rule", RULES)
def test_ig_agrees_with_captum_where_its_rules_agree(x_img, rule):
    from captum.attr import IntegratedGradients

    model = ReLUNet().double().eval()
    x = x_img.double()
    n = 16
    ours = gradsal.integrated_gradients(model, x, 2, n_steps=n, method=rule)
    theirs = (
        IntegratedGradients(model)
        .attribute(x[None], target=2, n_steps=n, method=rule)[0]
        .detach()
    )
    if rule == "riemann_trapezoid":
        # Captum weighs the n nodes of linspace(0, 1, n) by 1/n (halved at the ends): they add
        # up to (n - 1)/n, so its map is (n - 1)/n of the trapezoid rule's.
        torch.testing.assert_close(
            theirs, ours * (n - 1) / n, atol=1e-6, rtol=1e-4
        )
    else:
        torch.testing.assert_close(theirs, ours, atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------------------
# Guided Backprop


def _manual_guided(
    model: ReLUNet, x: torch.Tensor, c: int, upper: float | None
) -> torch.Tensor:
    """The guided rule written out by hand for ReLUNet."""
    xx = x[None].clone().requires_grad_(True)
    z1 = model.conv(xx) * 3
    a1 = z1.clamp(0, upper) if upper else z1.clamp(min=0)
    z2 = model.fc1(a1.flatten(1))
    g_a2 = model.fc2.weight[c].view(1, -1)
    g_z2 = g_a2.clamp(min=0) * (z2 > 0)
    g_a1 = (g_z2 @ model.fc1.weight).view_as(a1)
    active = (z1 > 0) & (z1 < upper) if upper else z1 > 0
    g_z1 = g_a1.clamp(min=0) * active
    (g_x,) = torch.autograd.grad(z1, xx, g_z1 * 1.0)
    return g_x[0].detach()


@pytest.mark.parametrize("act, upper", [(nn.ReLU, None), (nn.ReLU6, 6.0)])
def test_guided_backprop_is_the_guided_rule_at_every_relu_like_unit(
    x_img, act, upper
):
    model = ReLUNet(act).eval()
    gb = gradsal.guided_backprop(model, x_img, 1)
    torch.testing.assert_close(
        gb, _manual_guided(model, x_img, 1, upper), atol=1e-6, rtol=1e-5
    )
    assert not torch.allclose(gb, gradsal.vanilla_gradient(model, x_img, 1))


def test_captum_guided_backprop_only_knows_nn_relu(x_img):
    from captum.attr import GuidedBackprop

    relu = ReLUNet(nn.ReLU).eval()
    relu6 = ReLUNet(nn.ReLU6).eval()

    # with nn.ReLU modules only, Captum agrees (F.relu in forward is not hooked: make it a module)
    class AllModules(ReLUNet):
        def __init__(self):
            super().__init__(nn.ReLU)
            self.act2 = nn.ReLU()

        def forward(self, x):
            return self.fc2(
                self.act2(self.fc1(self.act(self.conv(x) * 3).flatten(1)))
            )

    mods = AllModules().eval()
    theirs = GuidedBackprop(mods).attribute(x_img[None], target=1)[0].detach()
    torch.testing.assert_close(
        theirs, gradsal.guided_backprop(mods, x_img, 1), atol=1e-6, rtol=1e-5
    )
    # the functional F.relu is missed by Captum's hooks, and ReLU6 modules are not nn.ReLU
    for model in (relu, relu6):
        theirs = (
            GuidedBackprop(model).attribute(x_img[None], target=1)[0].detach()
        )
        assert not torch.allclose(
            theirs, gradsal.guided_backprop(model, x_img, 1), atol=1e-6
        )
    plain6 = GuidedBackprop(relu6).attribute(x_img[None], target=1)[0].detach()
    half_guided = _manual_guided_only_relu(relu6, x_img, 1)
    torch.testing.assert_close(plain6, half_guided, atol=1e-6, rtol=1e-5)


def _manual_guided_only_relu(
    model: ReLUNet, x: torch.Tensor, c: int
) -> torch.Tensor:
    """Captum on ReLUNet(ReLU6): nothing is guided (ReLU6 is a Hardtanh, F.relu is a function)."""
    return gradsal.vanilla_gradient(model, x, c)


def test_guided_backprop_leaves_no_trace_even_when_the_forward_fails(x_img):
    class Failing(ReLUNet):
        def forward(self, x):
            super().forward(x)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        gradsal.guided_backprop(Failing(nn.ReLU6).eval(), x_img, 0)
    model = ReLUNet(nn.ReLU6).eval()
    # no guided rule outlives the call: the plain gradient is plain again
    g = gradsal.vanilla_gradient(model, x_img, 0)
    xx = x_img[None].clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(model(xx)[0, 0], xx)
    torch.testing.assert_close(g, auto[0])
    assert (
        not model._forward_hooks
        and not model.act._forward_hooks
        and not model.act._backward_hooks
    )


class InPlaceNet(ReLUNet):
    """ReLUNet with its units in place, or with a unit's output changed in place afterwards."""

    def __init__(self, act: type[nn.Module], edit_after: bool = False) -> None:
        super().__init__(act)
        self.act = act(inplace=not edit_after)
        self.edit_after = edit_after

    def forward(self, x):
        h = self.act(self.conv(x) * 3)
        if (
            self.edit_after
        ):  # plain autograd allows it: hardtanh keeps its input
            h.mul_(1.0)
        return self.fc2(F.relu(self.fc1(h.flatten(1)), inplace=True))


@pytest.mark.parametrize("act, upper", [(nn.ReLU, None), (nn.ReLU6, 6.0)])
def test_guided_backprop_with_units_in_place_is_the_same_rule(
    x_img, act, upper
):
    twin = ReLUNet(act).eval()
    expected = _manual_guided(twin, x_img, 1, upper)
    model = InPlaceNet(act).eval()
    model.load_state_dict(twin.state_dict())
    torch.testing.assert_close(
        gradsal.guided_backprop(model, x_img, 1),
        expected,
        atol=1e-6,
        rtol=1e-5,
    )
    # what plain autograd accepts, the guided rule accepts: a ReLU6 output edited in place
    edited = InPlaceNet(nn.ReLU6, edit_after=True).eval()
    edited.load_state_dict(ReLUNet(nn.ReLU6).state_dict())
    torch.testing.assert_close(
        gradsal.guided_backprop(edited, x_img, 1),
        _manual_guided(ReLUNet(nn.ReLU6).eval(), x_img, 1, 6.0),
        atol=1e-6,
        rtol=1e-5,
    )


def test_smoothgrad_of_guided_backprop_takes_the_fast_path(tiny_cnn, x_img):
    from gradsal.engine import fold_for_gradients
    from gradsal.methods import method_spec

    assert fold_for_gradients(tiny_cnn) is not None  # batch norm folded
    spec = method_spec(gradsal.guided_backprop, gradsal.vanilla_gradient)
    assert spec.fast_path
    kw = dict(method=gradsal.guided_backprop, n_samples=6, generator=1)
    fast = gradsal.smoothgrad(tiny_cnn, x_img, 0, **kw)
    plain = gradsal.smoothgrad(tiny_cnn, x_img, 0, precision="float32", **kw)
    scale = float(plain.abs().max())
    assert scale > 1e-4
    torch.testing.assert_close(fast, plain, atol=1e-5 * scale, rtol=1e-4)
    # and it is the guided map, not the plain gradient's
    vanilla = gradsal.smoothgrad(tiny_cnn, x_img, 0, n_samples=6, generator=1)
    assert float((fast - vanilla).abs().max()) > 0.1 * scale


def test_smoothgrad_of_guided_backprop_on_two_workers_matches_one(x_img):
    model = ReLUNet(nn.ReLU6).eval()
    kw = dict(
        target=0,
        method=gradsal.guided_backprop,
        n_samples=8,
        noise_level=0.2,
        generator=3,
        batch_size=2,
    )
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = gradsal.smoothgrad(model, x_img, **kw)
        torch.set_num_threads(2)
        parallel = gradsal.smoothgrad(model, x_img, **kw)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(parallel, serial, atol=1e-7, rtol=1e-5)


# ---------------------------------------------------------------------------
# Grad-CAM


class CamNet(nn.Module):
    """conv -> ReLU -> global average pool -> linear: Grad-CAM is CAM / (h w) here."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 5, 3, stride=2, padding=1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        a = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.fc(a.mean(dim=(2, 3)))


def test_grad_cam_on_a_cam_network_is_the_class_activation_map(x_img):
    model = CamNet().eval()
    c = 2
    with torch.no_grad():
        feats = model.conv2(
            F.relu(model.conv1(x_img[None]))
        )  # the default layer: the last Conv2d
        h, w = feats.shape[-2:]
        # d logit / d A_kij = W_ck 1[A_kij > 0] / (h w) through the ReLU after conv2
        grads = model.fc.weight[c].view(1, -1, 1, 1) * (feats > 0) / (h * w)
        alpha = grads.mean(dim=(2, 3), keepdim=True)
        cam = (alpha * feats).sum(1, keepdim=True).clamp_min(0)
        expected = F.interpolate(
            cam, size=(8, 8), mode="bilinear", align_corners=False
        )[0, 0]
    got = gradsal.grad_cam(model, x_img, c)
    assert got.shape == (8, 8)
    torch.testing.assert_close(got, expected, atol=1e-7, rtol=1e-5)
    assert gradsal.grad_cam(model, torch.stack([x_img, x_img]), c).shape == (
        2,
        8,
        8,
    )
    torch.testing.assert_close(
        gradsal.grad_cam(model, x_img, c, layer="conv2"), got
    )
    ggc = gradsal.guided_grad_cam(model, x_img, c)
    torch.testing.assert_close(
        ggc,
        gradsal.guided_backprop(model, x_img, c) * got,
        atol=1e-7,
        rtol=1e-5,
    )


def test_grad_cam_agrees_with_captum_layer_grad_cam_with_its_relu_and_interpolation(
    x_img,
):
    from captum.attr import LayerAttribution, LayerGradCam

    model = CamNet().eval()
    lgc = LayerGradCam(model, model.conv2)
    raw = lgc.attribute(x_img[None], target=1, relu_attributions=True).detach()
    theirs = LayerAttribution.interpolate(
        raw, (8, 8), interpolate_mode="bilinear"
    )[0, 0].detach()
    torch.testing.assert_close(
        theirs,
        gradsal.grad_cam(model, x_img, 1, layer=model.conv2),
        atol=1e-7,
        rtol=1e-5,
    )
    # Captum's default leaves the ReLU out: negative evidence stays in its map
    signed = lgc.attribute(x_img[None], target=1).detach()
    assert float(signed.min()) < 0 <= float(raw.min())


def test_grad_cam_agrees_with_pytorch_grad_cam_up_to_its_normalisation(x_img):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = CamNet().eval()
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(5))
    with GradCAM(model=model, target_layers=[model.conv2]) as cam:
        theirs = cam(
            input_tensor=x[None], targets=[ClassifierOutputTarget(1)]
        )[0]
    ours = gradsal.grad_cam(model, x, 1).numpy()
    # pytorch-grad-cam rescales to [0, 1] (minus min, over max + 1e-7) and resizes with OpenCV
    scaled = (ours - ours.min()) / (ours.max() - ours.min() + 1e-7)
    assert theirs.shape == ours.shape and abs(theirs.max() - 1) < 1e-5
    # the two bilinear resizes (OpenCV's, torch's) round differently: 5e-4 of the peak here
    assert np.abs(scaled - theirs).max() < 2e-3


def test_grad_cam_records_the_graph_from_its_layer_on():
    model = CamNet().eval()
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(5))
    seen = []
    handle = model.conv1.register_forward_hook(
        lambda _m, _i, out: seen.append(out.requires_grad)
    )
    try:
        gradsal.grad_cam(model, x, 1)
    finally:
        handle.remove()
    assert seen == [False]  # the layers before conv2 ran without recording

    # an in-place unit after the layer overwrites its feature map, as it would
    # without gradsal: Grad-CAM then sees that unit's output
    class InPlace(CamNet):
        def __init__(self):
            super().__init__()
            self.act = nn.ReLU(inplace=True)

        def forward(self, x):
            a = self.act(self.conv2(F.relu(self.conv1(x))))
            return self.fc(a.mean(dim=(2, 3)))

    class Twin(InPlace):
        def __init__(self):
            super().__init__()
            self.act = nn.ReLU()

    inplace, twin = InPlace().eval(), Twin().eval()
    torch.testing.assert_close(
        gradsal.grad_cam(inplace, x, 1),
        gradsal.grad_cam(twin, x, 1, layer="act"),
        atol=1e-7,
        rtol=1e-5,
    )


def test_grad_cam_bad_layers_and_models(x_img, linear_model):
    model = CamNet().eval()
    with pytest.raises(ValueError, match="not a submodule"):
        gradsal.grad_cam(model, x_img, layer=nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="no submodule named"):
        gradsal.grad_cam(model, x_img, layer="head")
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        gradsal.grad_cam(linear_model, torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, K, h, w\) feature map"):
        gradsal.grad_cam(model, x_img, layer=model.fc)
    assert not model.conv2._forward_hooks  # removed after the failure


def test_smoothgrad_of_grad_cam_has_the_maps_shape(x_img):
    model = CamNet().eval()
    sg = gradsal.smoothgrad(
        model, x_img, 0, method=gradsal.grad_cam, n_samples=4, generator=0
    )
    assert sg.shape == (8, 8) and float(sg.min()) >= 0
