"""Tests of gradsal.metrics.faithfulness: deletion and insertion curves (chapter 05, Sanity Checks; Petsiuk et al., 2018)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from toy_models import TinyEfficientNet, linear_model, trained_like

from gradsal.metrics import faithfulness

pytestmark = pytest.mark.usefixtures("one_thread")


def test_auc_known_values() -> None:
    assert faithfulness.auc([0, 1], [0.7, 0.7]) == pytest.approx(0.7)
    f = [0, 0.1, 0.5, 1]
    assert faithfulness.auc(f, [0.3] * 4) == pytest.approx(
        0.3
    )  # a constant curve on any grid
    assert faithfulness.auc(
        np.linspace(0, 1, 11), np.linspace(0, 1, 11)
    ) == pytest.approx(0.5)
    assert faithfulness.auc([0, 0.5, 1], [1, 0, 0]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="from 0 to 1"):
        faithfulness.auc([0, 0.5], [1, 1])
    with pytest.raises(ValueError, match="from 0 to 1"):
        faithfulness.auc([0, 0.6, 0.5, 1], [1, 1, 1, 1])
    with pytest.raises(ValueError, match="length"):
        faithfulness.auc([0, 1], [1, 1, 1])


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
    best = faithfulness.deletion_curve(model, x, contribution, 0, **kwargs)
    # its values are the logit minus the running sum of sorted contributions
    expected = float(contribution.sum()) - np.concatenate(
        [[0], np.cumsum(np.sort(contribution.numpy().ravel())[::-1])]
    )
    assert np.allclose(best.scores, expected, atol=1e-5)
    worst_gap = np.inf
    for perm in itertools.permutations(range(5)):
        order_map = torch.tensor(
            [5.0 - perm.index(p) for p in range(5)]
        ).reshape(1, 5)
        curve = faithfulness.deletion_curve(model, x, order_map, 0, **kwargs)
        assert np.all(best.scores <= curve.scores + 1e-5)
        worst_gap = min(worst_gap, curve.auc - best.auc)
    assert worst_gap >= -1e-6
    # insertion in the same order is the steepest ascent; probabilities follow the logit
    ins = faithfulness.insertion_curve(
        model, x, contribution, 0, steps=5, baseline="zero"
    )
    inserted = np.concatenate(
        [[0], np.cumsum(np.sort(contribution.numpy().ravel())[::-1])]
    )
    assert np.allclose(ins.scores, 1 / (1 + np.exp(-inserted)), atol=1e-6)
    assert ins.scores[0] == pytest.approx(0.5)


def test_curve_endpoints_and_constant_model() -> None:
    model = linear_model(
        torch.zeros(3, 8, 8)
    )  # p(class 0) = 1/2 whatever the input
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    before = x.clone()
    s = torch.rand(8, 8, generator=torch.Generator().manual_seed(2))
    curve = faithfulness.deletion_curve(
        model, x, s, 0, steps=4, baseline="mean", batch_size=2
    )
    assert curve.kind == "deletion" and np.allclose(
        curve.fractions, [0, 0.25, 0.5, 0.75, 1]
    )
    assert np.allclose(curve.scores, 0.5) and curve.auc == pytest.approx(0.5)
    assert torch.equal(x, before)
    # endpoints: deletion goes from x to the baseline, insertion the other way
    w = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(3))
    lin = linear_model(w)
    base = torch.full_like(x, 0.25)
    d = faithfulness.deletion_curve(
        lin, x, s, 0, fractions=[0, 0.3, 1], baseline=base, score="logit"
    )
    i = faithfulness.insertion_curve(
        lin, x, s, 0, fractions=[0, 0.3, 1], baseline=base, score="logit"
    )
    assert d.scores[0] == pytest.approx(float((w * x).sum()), abs=1e-4)
    assert d.scores[-1] == pytest.approx(float((w * base).sum()), abs=1e-4)
    assert i.scores[0] == pytest.approx(d.scores[-1], abs=1e-5) and i.scores[
        -1
    ] == pytest.approx(d.scores[0], abs=1e-5)


def test_curve_batch_size_does_not_matter() -> None:
    torch.manual_seed(0)
    model = trained_like(TinyEfficientNet())
    x = torch.rand(3, 12, 12)
    s = torch.rand(12, 12)
    a = faithfulness.insertion_curve(model, x, s, steps=7, batch_size=1)
    b = faithfulness.insertion_curve(model, x, s, steps=7, batch_size=16)
    assert np.allclose(a.scores, b.scores, atol=1e-6)


def test_baseline_image() -> None:
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    blurred = faithfulness.baseline_image(x, "blur", blur_sigma=4)
    assert blurred.shape == x.shape and float(blurred.std()) < float(x.std())
    assert torch.allclose(
        blurred.mean(dim=(1, 2)), x.mean(dim=(1, 2)), atol=0.02
    )  # colours kept
    assert torch.equal(
        faithfulness.baseline_image(x, "zero"), torch.zeros_like(x)
    )
    assert torch.allclose(
        faithfulness.baseline_image(x, "mean")[:, 0, 0], x.mean(dim=(1, 2))
    )
    assert torch.equal(x, before)
    with pytest.raises(ValueError, match="kind"):
        faithfulness.baseline_image(x, "noise")
    with pytest.raises(ValueError, match="blur_sigma"):
        faithfulness.baseline_image(x, "blur", blur_sigma=0)


def test_curves_reject_bad_input() -> None:
    model = linear_model(torch.ones(3, 8, 8))
    x = torch.rand(3, 8, 8)
    s = torch.rand(8, 8)
    with pytest.raises(ValueError, match="shape"):
        faithfulness.deletion_curve(model, x, torch.rand(7, 8))
    with pytest.raises(ValueError, match="kind"):
        faithfulness.perturbation_curve(model, x, s, kind="removal")
    with pytest.raises(ValueError, match="from 0 to 1"):
        faithfulness.deletion_curve(model, x, s, fractions=[0.1, 0.5, 1])
    with pytest.raises(ValueError, match="steps"):
        faithfulness.deletion_curve(model, x, s, steps=0)
    with pytest.raises(ValueError, match="out of range"):
        faithfulness.deletion_curve(model, x, s, target=7)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        faithfulness.deletion_curve(model, x.unsqueeze(0), s)
    with pytest.raises(ValueError, match="score"):
        faithfulness.deletion_curve(model, x, s, score="loss")
    with pytest.raises(ValueError, match="baseline tensor"):
        faithfulness.deletion_curve(model, x, s, baseline=torch.zeros(3, 4, 4))


def test_several_maps_at_once_match_one_at_a_time() -> None:
    torch.manual_seed(0)
    model = trained_like(TinyEfficientNet())
    x = torch.rand(3, 10, 10)
    maps = {
        "a": torch.rand(10, 10),
        "b": np.random.default_rng(0).random((10, 10)),
    }
    together = faithfulness.perturbation_curves(
        model, x, maps, 2, steps=5, baseline="zero", batch_size=3
    )
    assert set(together) == {
        (m, k) for m in maps for k in faithfulness.CURVE_KINDS
    }
    for (name, kind), curve in together.items():
        alone = faithfulness.perturbation_curve(
            model, x, maps[name], 2, kind=kind, steps=5, baseline="zero"
        )
        assert np.allclose(curve.scores, alone.scores, atol=1e-6)
    with pytest.raises(ValueError, match="non-empty"):
        faithfulness.perturbation_curves(model, x, {})
    with pytest.raises(ValueError, match="kinds"):
        faithfulness.perturbation_curves(
            model, x, maps, kinds=("deletion", "shuffle")
        )


def test_rise_blur_is_an_11_tap_kernel_with_zero_padding():
    import numpy as np
    from scipy.ndimage import gaussian_filter

    from gradsal.metrics import baseline_image

    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    blurred = baseline_image(x, "blur", blur_sigma=5, taps=11)
    impulse = np.zeros((11, 11))
    impulse[5, 5] = 1
    k = gaussian_filter(impulse, 5)
    assert abs(k.sum() - 1) < 1e-12
    i, j = 16, 16  # an interior pixel: the full kernel
    expected = (x[0, i - 5 : i + 6, j - 5 : j + 6].double().numpy() * k).sum()
    assert float(blurred[0, i, j]) == pytest.approx(expected, rel=1e-5)
    # zero padding darkens the corners: a constant image loses mass there
    flat = baseline_image(torch.ones(3, 32, 32), "blur", blur_sigma=5, taps=11)
    assert (
        float(flat[0, 16, 16]) == pytest.approx(1.0, abs=1e-6)
        and float(flat[0, 0, 0]) < 0.5
    )
    with pytest.raises(ValueError, match="odd"):
        baseline_image(x, "blur", blur_sigma=5, taps=10)
