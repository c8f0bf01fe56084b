"""Tests of gradsal.metrics.robustness: max-sensitivity (chapter 05, Sanity Checks; Yeh et al., 2019)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from toy_models import linear_model

from gradsal import vanilla_gradient
from gradsal.metrics import robustness

pytestmark = pytest.mark.usefixtures("one_thread")


def test_max_sensitivity_of_a_linear_gradient_is_zero() -> None:
    w = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(0))
    model = linear_model(w)
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    before = x.clone()
    result = robustness.max_sensitivity(
        lambda z: vanilla_gradient(model, z, 0),
        x,
        radius=0.1,
        n_perturbations=4,
    )
    assert result.value == pytest.approx(
        0.0, abs=1e-7
    ) and result.ratios.shape == (4,)
    assert torch.equal(x, before)


def test_max_sensitivity_of_the_identity_is_bounded_by_the_radius() -> None:
    # E(x) = x: ||delta|| / ||x||, and ||delta||_2 <= radius * sqrt(d)
    x = torch.full((4, 4), 2.0)
    r = robustness.max_sensitivity(
        lambda z: z, x, radius=0.05, n_perturbations=16, generator=0
    )
    assert 0 < r.value <= 0.05 * 4 / 8 + 1e-9  # sqrt(16) = 4, ||x|| = 8
    assert r.value == pytest.approx(float(r.ratios.max()))
    same = robustness.max_sensitivity(
        lambda z: z, x, radius=0.05, n_perturbations=16, generator=0
    )
    assert np.array_equal(r.ratios, same.ratios)


def test_max_sensitivity_rejects_bad_input() -> None:
    x = torch.rand(3, 4, 4)
    with pytest.raises(TypeError, match="callable"):
        robustness.max_sensitivity("f", x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="radius"):
        robustness.max_sensitivity(lambda z: z, x, radius=0)
    with pytest.raises(ValueError, match="n_perturbations"):
        robustness.max_sensitivity(lambda z: z, x, n_perturbations=0)
    with pytest.raises(ValueError, match="zero"):
        robustness.max_sensitivity(lambda z: torch.zeros_like(z), x)
    with pytest.raises(ValueError, match="finite"):
        robustness.max_sensitivity(lambda z: z, torch.full((3,), float("inf")))


def test_max_sensitivity_of_several_explanations_at_once() -> None:
    x = torch.full((4, 4), 2.0)
    both = robustness.max_sensitivity(
        lambda z: {"id": z, "const": torch.ones(4, 4)},
        x,
        radius=0.05,
        n_perturbations=5,
    )
    alone = robustness.max_sensitivity(
        lambda z: z, x, radius=0.05, n_perturbations=5
    )
    assert set(both) == {"id", "const"}
    assert both["const"].value == 0.0
    assert np.array_equal(both["id"].ratios, alone.ratios)  # the same deltas
    with pytest.raises(ValueError, match="keys"):
        calls = iter(range(10))
        robustness.max_sensitivity(
            lambda z: {"a" if next(calls) == 0 else "b": z}, x
        )


def test_rank_distance_ignores_monotone_rescaling_where_frobenius_doubles() -> (
    None
):
    # E(z) = z near a constant image 2: about ||delta|| / 8. E(z) = z^2:
    # about (4 delta) / 16, twice that to first order. Ranks: a monotone map
    # of positive values orders pixels identically, so 1 - rho is the same.
    x = 2 + 0.01 * torch.arange(16.0).view(4, 4) / 16
    both = robustness.max_sensitivity(
        lambda z: {"e": z, "square": z.square()},
        x,
        radius=1e-3,
        n_perturbations=6,
        generator=0,
        rank=True,
    )
    ratio = both["square"].ratios / both["e"].ratios
    np.testing.assert_allclose(ratio, 2.0, rtol=2e-2)
    np.testing.assert_allclose(
        both["square"].rank_changes, both["e"].rank_changes, atol=1e-12
    )
    assert both["e"].rank_value == pytest.approx(
        float(both["e"].rank_changes.max())
    )
    assert 0 < both["e"].rank_value <= 2


def test_rank_distance_is_zero_when_the_ordering_survives() -> None:
    # a ramp with steps of 1 perturbed by at most 0.1 keeps its pixel order
    x = torch.arange(16.0).view(4, 4) + 1
    r = robustness.max_sensitivity(
        lambda z: z, x, radius=0.1, n_perturbations=5, generator=3, rank=True
    )
    assert r.rank_value == pytest.approx(0.0, abs=1e-12)
    assert r.value > 0
    plain = robustness.max_sensitivity(lambda z: z, x, radius=0.1)
    assert plain.rank_value is None and plain.rank_changes is None
