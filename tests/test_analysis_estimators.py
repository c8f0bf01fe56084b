"""Closed-form checks of gradsal.analysis.estimators (chapter 04, What SmoothGrad Estimates)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from gradsal.analysis import estimators
from gradsal.core import as_generator
from gradsal.methods import gaussian_noise, noise_sigma


class Linear(nn.Module):
    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x):
        z = (x.flatten(1) * self.w.flatten()).sum(1, keepdim=True)
        return torch.cat([z, -z], dim=1)


class Cubic(nn.Module):
    """f(x) = sum_i a_i x_i^3 on (B, F) inputs; one logit."""

    def __init__(self, a: torch.Tensor):
        super().__init__()
        self.register_buffer("a", a.clone())

    def forward(self, x):
        return (self.a * x**3).sum(1, keepdim=True)


def test_jensen_gap_identity():
    g = (
        torch.randn(64, 3, 5, 5, generator=torch.Generator().manual_seed(1))
        + 0.3
    )
    gap = estimators.jensen_gap(g)
    assert gap.shape == (3, 5, 5)
    assert torch.allclose(gap, g.abs().mean(0) - g.mean(0).abs(), atol=1e-6)
    assert (gap >= 0).all()
    # No sign change, no gap.
    assert torch.equal(estimators.jensen_gap(g.abs()), torch.zeros(3, 5, 5))
    with pytest.raises(TypeError):
        estimators.jensen_gap(torch.ones(3, dtype=torch.long))


def test_variance_vs_n_follows_one_over_n():
    gen = torch.Generator().manual_seed(2)
    s = torch.linspace(0.5, 2.0, 200)
    pool = torch.randn(480, 200, generator=gen) * s
    ns = [1, 2, 4, 8, 16, 24, 40]
    v = estimators.variance_vs_n(pool, ns)
    assert v.dtype == torch.float64 and v.shape == (len(ns),)
    # n = 1 is the summed sample variance of the pool itself.
    assert float(v[0]) == pytest.approx(float(pool.double().var(0).sum()))
    expected = float((s.double() ** 2).sum())
    for n, value in zip(ns, v):
        assert float(value) * n == pytest.approx(expected, rel=0.25)
    slope, _ = estimators.loglog_slope(ns, v)
    assert abs(slope + 1) < 0.05
    with pytest.raises(ValueError):
        estimators.variance_vs_n(pool, [300])


def test_loglog_slope_exact_power_law():
    x = np.array([1.0, 2.0, 5.0, 10.0])
    slope, intercept = estimators.loglog_slope(x, 3.0 * x**-1.5)
    assert slope == pytest.approx(-1.5) and intercept == pytest.approx(
        math.log(3.0)
    )
    with pytest.raises(ValueError):
        estimators.loglog_slope([1.0, 2.0], [1.0, -1.0])


def test_stein_linear_model_projects_the_weights():
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(2, 4, 4, generator=gen)
    model = Linear(w)
    x = torch.rand(2, 4, 4, generator=gen)
    directions = torch.eye(32).reshape(32, 2, 4, 4)
    z = estimators.stein_projections(
        model,
        x,
        directions,
        target=0,
        n_pairs=4000,
        noise_level=0.2,
        generator=5,
    )
    assert z.shape == (4000, 32)
    est = z.mean(0)
    se = z.std(0) / math.sqrt(z.shape[0])
    # For a linear f each value is (u.eps)(w.eps)/sigma^2: unbiased for u.w.
    zscores = (est - w.flatten().double()) / se
    assert zscores.abs().max() < 4.5
    # Target 1 is -f, so its estimate is the negative, draw for draw.
    z1 = estimators.stein_projections(
        model,
        x,
        directions,
        target=1,
        n_pairs=4000,
        noise_level=0.2,
        generator=5,
    )
    assert torch.allclose(z1, -z)
    # The model is left as it was.
    assert model.w.requires_grad and model.training


def test_stein_cubic_matches_closed_form_smoothed_gradient():
    a = torch.tensor([1.0, -2.0, 0.5])
    x = torch.tensor([0.2, 0.6, 1.0])
    model = Cubic(a)
    noise_level = 0.25
    sigma = noise_level * float(x.max() - x.min())
    z = estimators.stein_projections(
        model,
        x,
        torch.eye(3),
        n_pairs=20000,
        noise_level=noise_level,
        generator=7,
        batch_size=500,
    )
    est, se = z.mean(0), z.std(0) / math.sqrt(z.shape[0])
    truth = 3 * a.double() * (x.double() ** 2 + sigma**2)
    assert ((est - truth) / se).abs().max() < 4.5


def test_stein_arguments_checked():
    model = Linear(torch.ones(2, 2, 2))
    x = torch.rand(2, 2, 2)
    with pytest.raises(ValueError):
        estimators.stein_projections(model, x, torch.ones(3, 2, 2), n_pairs=4)
    with pytest.raises(ValueError):
        estimators.stein_projections(
            model, x, torch.ones(2, 2, 2), n_pairs=4, noise_level=0.0
        )
    with pytest.raises(ValueError, match="n_pairs must be an integer >= 1"):
        estimators.stein_projections(model, x, torch.ones(2, 2, 2), n_pairs=0)
    # One direction of x's shape is accepted.
    assert estimators.stein_projections(
        model, x, torch.ones(2, 2, 2), n_pairs=4, generator=0
    ).shape == (4, 1)


def test_stein_draws_smoothgrads_noise():
    # For a linear f the antithetic half-difference is w . eps, so every value can be
    # recomputed from the draws of gaussian_noise with the same seed and SmoothGrad's sigma.
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(2, 3, 3, generator=gen)
    model = Linear(w)
    x = torch.rand(2, 3, 3, generator=gen)
    u = torch.randn(2, 2, 3, 3, generator=gen)
    z = estimators.stein_projections(
        model,
        x,
        u,
        target=0,
        n_pairs=10,
        noise_level=0.3,
        batch_size=4,
        generator=8,
    )
    sigma = noise_sigma(x, 0.3)
    eps = sigma * gaussian_noise(x.shape, 10, as_generator(8))
    expected = (eps.flatten(1).double() @ u.flatten(1).double().T) * (
        eps.flatten(1) @ w.flatten()
    ).double()[:, None]
    assert torch.allclose(z, expected / sigma**2, rtol=1e-5, atol=1e-6)
