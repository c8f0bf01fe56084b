"""Tests of gradsal.evaluate (chapter 05-SanityChecks) on cases with known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from gradsal import evaluate as ev
from gradsal import vanilla_gradient


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------
# tiny models


class TinyEfficientNet(nn.Module):
    """The attribute layout of an EfficientNet, at toy size (3 stages, 5 blocks)."""

    class Block(nn.Module):
        def __init__(self, c_in: int, c_out: int) -> None:
            super().__init__()
            self._depthwise_conv = nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False)
            self._bn1 = nn.BatchNorm2d(c_in)
            self._project_conv = nn.Conv2d(c_in, c_out, 1, bias=False)
            self._bn2 = nn.BatchNorm2d(c_out)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self._bn2(self._project_conv(torch.relu(self._bn1(self._depthwise_conv(x)))))

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self._bn0 = nn.BatchNorm2d(4)
        widths = [(4, 4), (4, 6), (6, 6), (6, 8), (8, 8)]
        self._blocks = nn.ModuleList(self.Block(a, b) for a, b in widths)
        self._conv_head = nn.Conv2d(8, 10, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(10)
        self._fc = nn.Linear(10, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = torch.relu(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def trained_like(model: nn.Module, seed: int = 1) -> nn.Module:
    """Give every parameter and batch-norm statistic a non-initial value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + 0.1)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model.eval()


def linear_model(w: torch.Tensor) -> nn.Module:
    """Two classes, logits (w . x, 0): class 0's probability is sigmoid(w . x)."""

    class Linear2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(w.clone(), requires_grad=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = (x * self.w).flatten(1).sum(1)
            return torch.stack([z, torch.zeros_like(z)], dim=1)

    return Linear2().eval()


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------
# cascading randomisation


def test_efficientnet_stages_order_and_grouping() -> None:
    net = TinyEfficientNet()
    wrapped = nn.Sequential(nn.Identity(), net)
    by_stage = ev.efficientnet_stages(wrapped)
    labels = [label for label, _ in by_stage]
    # output widths 4,6,6,8,8 -> groups [0], [1,2], [3,4], visited last first
    assert labels == ["fc", "head", "blocks 3-4", "blocks 1-2", "block 0", "stem"]
    assert by_stage[0][1] == ("1._fc",)
    assert by_stage[1][1] == ("1._conv_head", "1._bn1")
    assert by_stage[-1][1] == ("1._conv_stem", "1._bn0")
    by_block = ev.efficientnet_stages(net, by="block")
    assert [label for label, _ in by_block][2:-1] == ["block 4", "block 3", "block 2", "block 1", "block 0"]
    with pytest.raises(ValueError, match="no EfficientNet"):
        ev.efficientnet_stages(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="by must be"):
        ev.efficientnet_stages(net, by="layer")


def test_randomization_changes_only_the_intended_layers() -> None:
    model = nn.Sequential(nn.Identity(), trained_like(TinyEfficientNet()))
    before = state_copy(model)
    stages = ev.efficientnet_stages(model)
    randomised: set[str] = set()
    n_steps = 0
    for (label, names), (got_label, copy_) in zip(stages, ev.cascading_randomization(model, stages, generator=0)):
        n_steps += 1
        assert got_label == label and copy_ is not model
        randomised |= {n + "." for n in names}
        for key, value in copy_.state_dict().items():
            if key.endswith("num_batches_tracked"):
                continue
            if any(key.startswith(prefix) for prefix in randomised):
                assert not torch.equal(value, before[key]), f"{key} should have been re-initialised at {label}"
            else:
                assert torch.equal(value, before[key]), f"{key} changed at {label} but is not in a randomised stage"
    assert n_steps == len(stages)
    # the caller's model is untouched
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_randomization_copies_are_independent_and_seeded() -> None:
    model = trained_like(TinyEfficientNet())
    first = list(ev.cascading_randomization(model, generator=3))
    again = list(ev.cascading_randomization(model, generator=3))
    other = list(ev.cascading_randomization(model, generator=4))
    w_fc = [m._fc.weight.clone() for _, m in first]
    # later steps do not change what earlier copies hold
    assert all(torch.equal(w_fc[0], w) for w in w_fc)
    assert torch.equal(first[-1][1]._conv_stem.weight, again[-1][1]._conv_stem.weight)
    assert not torch.equal(first[-1][1]._conv_stem.weight, other[-1][1]._conv_stem.weight)
    # flags are copied as they were
    assert not first[0][1].training


def test_reinitialize_values() -> None:
    torch.manual_seed(0)
    bn = trained_like(nn.Sequential(nn.BatchNorm2d(3)))[0]
    ev.reinitialize_(bn)
    assert torch.equal(bn.weight, torch.ones(3)) and torch.equal(bn.bias, torch.zeros(3))
    assert torch.equal(bn.running_mean, torch.zeros(3)) and torch.equal(bn.running_var, torch.ones(3))
    conv = nn.Conv2d(64, 128, 3)
    ev.reinitialize_(conv, 0)
    fan_in = 64 * 9
    assert abs(float(conv.weight.detach().std()) - (2 / fan_in) ** 0.5) < 0.05 * (2 / fan_in) ** 0.5
    assert torch.equal(conv.bias, torch.zeros(128))
    with pytest.raises(TypeError):
        ev.reinitialize_("conv")  # type: ignore[arg-type]


def test_randomization_rejects_bad_stages() -> None:
    model = TinyEfficientNet()
    with pytest.raises(ValueError, match="no submodule"):
        ev.cascading_randomization(model, [("x", ["_nope"])])
    with pytest.raises(ValueError, match="no parameters"):
        ev.cascading_randomization(nn.Sequential(nn.ReLU()), [("relu", ["0"])])
    with pytest.raises(ValueError, match="non-empty"):
        ev.cascading_randomization(model, [])
    with pytest.raises(ValueError, match="pair"):
        ev.cascading_randomization(model, ["_fc"])
    with pytest.raises(TypeError):
        ev.cascading_randomization("model", None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# similarity


def test_similarity_known_values() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(32, 32, generator=gen)
    assert ev.ssim(a, a) == pytest.approx(1.0)
    assert ev.ssim(a, 3 * a + 2) == pytest.approx(1.0)  # scale-free after min-max scaling
    assert ev.spearman(a, a) == pytest.approx(1.0)
    assert ev.spearman(a, -a) == pytest.approx(-1.0)
    assert ev.spearman(a, -a, absolute=True) == pytest.approx(1.0)
    assert ev.spearman(a, torch.exp(a)) == pytest.approx(1.0)  # ranks only
    sims = ev.map_similarity(a, -a)
    assert sims["spearman"] == pytest.approx(-1.0)
    assert sims["spearman_abs"] == pytest.approx(1.0) and sims["ssim"] == pytest.approx(1.0)
    b = torch.randn(32, 32, generator=gen)
    assert abs(ev.spearman(a, b)) < 0.1  # independent maps
    assert ev.ssim(a, b) < 0.2


def test_similarity_rejects_bad_input() -> None:
    a = torch.rand(16, 16)
    with pytest.raises(ValueError, match="same shape"):
        ev.ssim(a, torch.rand(16, 17))
    with pytest.raises(ValueError, match="2-D"):
        ev.spearman(torch.rand(3, 16, 16), torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="NaN"):
        ev.spearman(a, torch.full((16, 16), float("nan")))
    with pytest.raises(ValueError, match="constant"):
        ev.spearman(a, torch.zeros(16, 16))
    with pytest.raises(TypeError):
        ev.ssim(a, [[1.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window"):
        ev.ssim(torch.rand(4, 4), torch.rand(4, 4))


# ---------------------------------------------------------------------------
# baselines


def test_random_map_is_seeded_uniform() -> None:
    r = ev.random_map((50, 60), generator=5)
    assert r.shape == (50, 60) and 0 <= float(r.min()) and float(r.max()) < 1
    assert torch.equal(r, ev.random_map((50, 60), generator=5))
    assert not torch.equal(r, ev.random_map((50, 60), generator=6))
    with pytest.raises(ValueError):
        ev.random_map((50,))  # type: ignore[arg-type]


def test_sobel_map_finds_a_vertical_edge() -> None:
    x = torch.zeros(3, 20, 20)
    x[1, :, 10:] = 1.0  # an edge in the green channel only
    before = x.clone()
    s = ev.sobel_map(x)
    assert s.shape == (20, 20)
    assert float(s[:, :8].max()) == 0.0 and float(s[:, 12:].max()) == 0.0
    assert float(s[5, 9]) > 0 and float(s[5, 10]) > 0
    assert torch.equal(x, before)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        ev.sobel_map(torch.rand(20, 20))


# ---------------------------------------------------------------------------
# deletion and insertion


def test_auc_known_values() -> None:
    assert ev.auc([0, 1], [0.7, 0.7]) == pytest.approx(0.7)
    f = [0, 0.1, 0.5, 1]
    assert ev.auc(f, [0.3] * 4) == pytest.approx(0.3)  # a constant curve on any grid
    assert ev.auc(np.linspace(0, 1, 11), np.linspace(0, 1, 11)) == pytest.approx(0.5)
    assert ev.auc([0, 0.5, 1], [1, 0, 0]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="from 0 to 1"):
        ev.auc([0, 0.5], [1, 1])
    with pytest.raises(ValueError, match="from 0 to 1"):
        ev.auc([0, 0.6, 0.5, 1], [1, 1, 1, 1])
    with pytest.raises(ValueError, match="length"):
        ev.auc([0, 1], [1, 1, 1])


def test_deletion_with_exact_attribution_is_optimal() -> None:
    # f(x) = w . x; with a zero baseline, deleting pixel p removes exactly its
    # contribution c_p = sum_k w_kp x_kp. Deleting in decreasing c_p is the
    # steepest possible descent: its curve lies below that of every ordering.
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(2, 1, 5, generator=gen)
    x = torch.rand(2, 1, 5, generator=gen)
    model = linear_model(w)
    contribution = (w * x).sum(0)
    kwargs = dict(steps=5, baseline="zero", score="logit")
    best = ev.deletion_curve(model, x, contribution, 0, **kwargs)
    # its values are the logit minus the running sum of sorted contributions
    expected = float(contribution.sum()) - np.concatenate([[0], np.cumsum(np.sort(contribution.numpy().ravel())[::-1])])
    assert np.allclose(best.scores, expected, atol=1e-5)
    worst_gap = np.inf
    for perm in itertools.permutations(range(5)):
        order_map = torch.tensor([5.0 - perm.index(p) for p in range(5)]).reshape(1, 5)
        curve = ev.deletion_curve(model, x, order_map, 0, **kwargs)
        assert np.all(best.scores <= curve.scores + 1e-5)
        worst_gap = min(worst_gap, curve.auc - best.auc)
    assert worst_gap >= -1e-6
    # insertion in the same order is the steepest ascent; probabilities follow the logit
    ins = ev.insertion_curve(model, x, contribution, 0, steps=5, baseline="zero")
    inserted = np.concatenate([[0], np.cumsum(np.sort(contribution.numpy().ravel())[::-1])])
    assert np.allclose(ins.scores, 1 / (1 + np.exp(-inserted)), atol=1e-6)
    assert ins.scores[0] == pytest.approx(0.5)


def test_curve_endpoints_and_constant_model() -> None:
    model = linear_model(torch.zeros(3, 8, 8))  # p(class 0) = 1/2 whatever the input
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    before = x.clone()
    s = torch.rand(8, 8, generator=torch.Generator().manual_seed(2))
    curve = ev.deletion_curve(model, x, s, 0, steps=4, baseline="mean", batch_size=2)
    assert curve.kind == "deletion" and np.allclose(curve.fractions, [0, 0.25, 0.5, 0.75, 1])
    assert np.allclose(curve.scores, 0.5) and curve.auc == pytest.approx(0.5)
    assert torch.equal(x, before)
    # endpoints: deletion goes from x to the baseline, insertion the other way
    w = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(3))
    lin = linear_model(w)
    base = torch.full_like(x, 0.25)
    d = ev.deletion_curve(lin, x, s, 0, fractions=[0, 0.3, 1], baseline=base, score="logit")
    i = ev.insertion_curve(lin, x, s, 0, fractions=[0, 0.3, 1], baseline=base, score="logit")
    assert d.scores[0] == pytest.approx(float((w * x).sum()), abs=1e-4)
    assert d.scores[-1] == pytest.approx(float((w * base).sum()), abs=1e-4)
    assert i.scores[0] == pytest.approx(d.scores[-1], abs=1e-5) and i.scores[-1] == pytest.approx(d.scores[0], abs=1e-5)


def test_curve_batch_size_does_not_matter() -> None:
    torch.manual_seed(0)
    model = trained_like(TinyEfficientNet())
    x = torch.rand(3, 12, 12)
    s = torch.rand(12, 12)
    a = ev.insertion_curve(model, x, s, steps=7, batch_size=1)
    b = ev.insertion_curve(model, x, s, steps=7, batch_size=16)
    assert np.allclose(a.scores, b.scores, atol=1e-6)


def test_baseline_image() -> None:
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    blurred = ev.baseline_image(x, "blur", blur_sigma=4)
    assert blurred.shape == x.shape and float(blurred.std()) < float(x.std())
    assert torch.allclose(blurred.mean(dim=(1, 2)), x.mean(dim=(1, 2)), atol=0.02)  # colours kept
    assert torch.equal(ev.baseline_image(x, "zero"), torch.zeros_like(x))
    assert torch.allclose(ev.baseline_image(x, "mean")[:, 0, 0], x.mean(dim=(1, 2)))
    assert torch.equal(x, before)
    with pytest.raises(ValueError, match="kind"):
        ev.baseline_image(x, "noise")
    with pytest.raises(ValueError, match="blur_sigma"):
        ev.baseline_image(x, "blur", blur_sigma=0)


def test_curves_reject_bad_input() -> None:
    model = linear_model(torch.ones(3, 8, 8))
    x = torch.rand(3, 8, 8)
    s = torch.rand(8, 8)
    with pytest.raises(ValueError, match="shape"):
        ev.deletion_curve(model, x, torch.rand(7, 8))
    with pytest.raises(ValueError, match="kind"):
        ev.perturbation_curve(model, x, s, kind="removal")
    with pytest.raises(ValueError, match="from 0 to 1"):
        ev.deletion_curve(model, x, s, fractions=[0.1, 0.5, 1])
    with pytest.raises(ValueError, match="steps"):
        ev.deletion_curve(model, x, s, steps=0)
    with pytest.raises(ValueError, match="out of range"):
        ev.deletion_curve(model, x, s, target=7)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        ev.deletion_curve(model, x.unsqueeze(0), s)
    with pytest.raises(ValueError, match="score"):
        ev.deletion_curve(model, x, s, score="loss")
    with pytest.raises(ValueError, match="baseline tensor"):
        ev.deletion_curve(model, x, s, baseline=torch.zeros(3, 4, 4))


# ---------------------------------------------------------------------------
# max-sensitivity


def test_max_sensitivity_of_a_linear_gradient_is_zero() -> None:
    w = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(0))
    model = linear_model(w)
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    before = x.clone()
    result = ev.max_sensitivity(lambda z: vanilla_gradient(model, z, 0), x, radius=0.1, n_perturbations=4)
    assert result.value == pytest.approx(0.0, abs=1e-7) and result.ratios.shape == (4,)
    assert torch.equal(x, before)


def test_max_sensitivity_of_the_identity_is_bounded_by_the_radius() -> None:
    # E(x) = x: ||delta|| / ||x||, and ||delta||_2 <= radius * sqrt(d)
    x = torch.full((4, 4), 2.0)
    r = ev.max_sensitivity(lambda z: z, x, radius=0.05, n_perturbations=16, generator=0)
    assert 0 < r.value <= 0.05 * 4 / 8 + 1e-9  # sqrt(16) = 4, ||x|| = 8
    assert r.value == pytest.approx(float(r.ratios.max()))
    same = ev.max_sensitivity(lambda z: z, x, radius=0.05, n_perturbations=16, generator=0)
    assert np.array_equal(r.ratios, same.ratios)


def test_max_sensitivity_rejects_bad_input() -> None:
    x = torch.rand(3, 4, 4)
    with pytest.raises(TypeError, match="callable"):
        ev.max_sensitivity("f", x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="radius"):
        ev.max_sensitivity(lambda z: z, x, radius=0)
    with pytest.raises(ValueError, match="n_perturbations"):
        ev.max_sensitivity(lambda z: z, x, n_perturbations=0)
    with pytest.raises(ValueError, match="zero"):
        ev.max_sensitivity(lambda z: torch.zeros_like(z), x)
    with pytest.raises(ValueError, match="finite"):
        ev.max_sensitivity(lambda z: z, torch.full((3,), float("inf")))


def test_max_sensitivity_of_several_explanations_at_once() -> None:
    x = torch.full((4, 4), 2.0)
    both = ev.max_sensitivity(lambda z: {"id": z, "const": torch.ones(4, 4)}, x, radius=0.05, n_perturbations=5)
    alone = ev.max_sensitivity(lambda z: z, x, radius=0.05, n_perturbations=5)
    assert set(both) == {"id", "const"}
    assert both["const"].value == 0.0
    assert np.array_equal(both["id"].ratios, alone.ratios)  # the same deltas
    with pytest.raises(ValueError, match="keys"):
        calls = iter(range(10))
        ev.max_sensitivity(lambda z: {"a" if next(calls) == 0 else "b": z}, x)


def test_several_maps_at_once_match_one_at_a_time() -> None:
    torch.manual_seed(0)
    model = trained_like(TinyEfficientNet())
    x = torch.rand(3, 10, 10)
    maps = {"a": torch.rand(10, 10), "b": np.random.default_rng(0).random((10, 10))}
    together = ev.perturbation_curves(model, x, maps, 2, steps=5, baseline="zero", batch_size=3)
    assert set(together) == {(m, k) for m in maps for k in ev.CURVE_KINDS}
    for (name, kind), curve in together.items():
        alone = ev.perturbation_curve(model, x, maps[name], 2, kind=kind, steps=5, baseline="zero")
        assert np.allclose(curve.scores, alone.scores, atol=1e-6)
    with pytest.raises(ValueError, match="non-empty"):
        ev.perturbation_curves(model, x, {})
    with pytest.raises(ValueError, match="kinds"):
        ev.perturbation_curves(model, x, maps, kinds=("deletion", "shuffle"))
