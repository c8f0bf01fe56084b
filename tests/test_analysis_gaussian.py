"""Closed forms under Gaussian noise, checked by quadrature and Monte Carlo (chapter 03, ReLU Boundaries; chapter 04, What SmoothGrad Estimates)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import integrate, stats

import gradsal
from gradsal.analysis import gaussian


def _quad_expectation(fn, sigma):
    return integrate.quad(
        lambda e: fn(e) * stats.norm.pdf(e, scale=sigma),
        -12 * sigma,
        12 * sigma,
        points=[0.0],
        limit=400,
    )[0]


@pytest.mark.parametrize(
    "w,b,sigma", [(1.0, 0.0, 1.0), (-2.0, 0.7, 0.3), (0.5, -1.0, 2.0)]
)
def test_smoothed_relu_derivative_by_quadrature(w, b, sigma):
    for x in (-1.3, 0.0, 0.4, 2.5):
        kink = -(w * x + b) / w  # the noise value at which the unit switches
        expected = integrate.quad(
            lambda e, x=x: (
                w * float(w * (x + e) + b > 0) * stats.norm.pdf(e, scale=sigma)
            ),
            -12 * sigma,
            12 * sigma,
            points=[kink],
            limit=400,
        )[0]
        assert float(
            gaussian.smoothed_relu_derivative(x, w, b, sigma)
        ) == pytest.approx(expected, abs=1e-7)
        expected6 = integrate.quad(
            lambda e, x=x: (
                w
                * float(0 < w * (x + e) + b < 6)
                * stats.norm.pdf(e, scale=sigma)
            ),
            -12 * sigma,
            12 * sigma,
            points=[kink, (6 - w * x - b) / w],
            limit=400,
        )[0]
        assert float(
            gaussian.smoothed_relu6_derivative(x, w, b, sigma)
        ) == pytest.approx(expected6, abs=1e-7)


def test_standard_case_and_zero_noise_limits():
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    assert torch.allclose(
        gaussian.smoothed_relu_derivative(x, sigma=0.7),
        torch.special.ndtr(x / 0.7),
    )
    assert torch.equal(
        gaussian.smoothed_relu_derivative(x, 2.0, -1.0, 0.0),
        2.0 * (2 * x - 1 > 0).double(),
    )
    assert torch.equal(
        gaussian.smoothed_relu6_derivative(x, 3.0, 0.0, 0.0),
        3.0 * ((3 * x > 0) & (3 * x < 6)).double(),
    )
    assert torch.allclose(
        gaussian.smoothed_relu(x, 2.0, -1.0, 0.0), torch.relu(2 * x - 1)
    )
    with pytest.raises(ValueError):
        gaussian.smoothed_relu_derivative(x, 0.0)
    with pytest.raises(ValueError):
        gaussian.smoothed_relu6_derivative(x, 1.0, 0.0, -1.0)


def test_smoothed_relu_value_and_its_derivative():
    w, b, sigma = -1.5, 0.4, 0.8
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)
    for xi in x.tolist():
        expected = _quad_expectation(
            lambda e, xi=xi: max(w * (xi + e) + b, 0.0), sigma
        )
        assert float(gaussian.smoothed_relu(xi, w, b, sigma)) == pytest.approx(
            expected, abs=1e-7
        )
    h = 1e-5
    fd = (
        gaussian.smoothed_relu(x + h, w, b, sigma)
        - gaussian.smoothed_relu(x - h, w, b, sigma)
    ) / (2 * h)
    assert torch.allclose(
        fd, gaussian.smoothed_relu_derivative(x, w, b, sigma), atol=1e-8
    )


def test_flip_probability():
    z = torch.tensor([-2.0, 0.5, 3.0, 6.5], dtype=torch.float64)
    s = 0.9
    norm = stats.norm(scale=s)
    expected = [
        1 - norm.cdf(2.0),  # below: flips if it rises past 0
        1 - (norm.cdf(5.5) - norm.cdf(-0.5)),  # between: leaves (0, 6)
        1 - (norm.cdf(3.0) - norm.cdf(-3.0)),
        norm.cdf(-0.5),  # above: flips if it falls below 6
    ]
    assert np.allclose(
        gaussian.flip_probability(z, s, upper=6.0).numpy(), expected
    )
    relu = gaussian.flip_probability(z, s, upper=None).numpy()
    assert np.allclose(
        relu,
        [1 - norm.cdf(2.0), norm.cdf(-0.5), norm.cdf(-3.0), norm.cdf(-6.5)],
    )
    assert torch.all(gaussian.flip_probability(z, 0.0) == 0)


def test_gate_probability():
    z = torch.tensor([-1.0, 2.0, 7.0, 0.0], dtype=torch.float64)
    s = torch.tensor([0.5, 1.5, 2.0, 0.0], dtype=torch.float64)
    norm = stats.norm
    expected = [
        norm.cdf(7 / 0.5) - norm.cdf(1 / 0.5),
        norm.cdf(4 / 1.5) - norm.cdf(-2 / 1.5),
        norm.cdf(-1 / 2.0) - norm.cdf(-7 / 2.0),
        0.0,
    ]
    assert np.allclose(
        gaussian.gate_probability(z, s, upper=6.0).numpy(), expected
    )
    assert np.allclose(
        gaussian.gate_probability(z[:3], s[:3], upper=None).numpy(),
        norm.cdf((z[:3] / s[:3]).numpy()),
    )
    # a unit that the noise cannot move keeps its gate, and changes state never
    assert (
        float(gaussian.gate_probability(3.0, 0.0)) == 1.0
        and float(gaussian.flip_probability(3.0, 0.0)) == 0.0
    )


def test_folded_normal_mean():
    assert float(gaussian.folded_normal_mean(0.0, 2.0)) == pytest.approx(
        2.0 * math.sqrt(2 / math.pi)
    )
    assert float(gaussian.folded_normal_mean(50.0, 1.0)) == pytest.approx(50.0)
    assert float(gaussian.folded_normal_mean(-50.0, 1.0)) == pytest.approx(
        50.0
    )
    g = (
        torch.randn(
            400_000,
            generator=torch.Generator().manual_seed(0),
            dtype=torch.float64,
        )
        * 1.5
        + 0.8
    )
    assert float(g.abs().mean()) == pytest.approx(
        float(gaussian.folded_normal_mean(0.8, 1.5)), abs=5e-3
    )
    with pytest.raises(ValueError):
        gaussian.folded_normal_mean(0.0, 0.0)


def test_plain_relu_is_the_default_of_the_gate_and_flip_probabilities():
    # Before, upper defaulted to 6, so a plain ReLU unit at z = 7 counted as ABOVE.
    z = torch.tensor([-2.0, 0.5, 7.0], dtype=torch.float64)
    s = 0.9
    norm = stats.norm(scale=s)
    assert np.allclose(
        gaussian.flip_probability(z, s).numpy(),
        [1 - norm.cdf(2.0), norm.cdf(-0.5), norm.cdf(-7.0)],
    )
    assert np.allclose(
        gaussian.gate_probability(z, s).numpy(), norm.cdf(z.numpy())
    )
    assert float(gaussian.gate_probability(7.0, 0.0)) == 1.0
    assert float(gaussian.gate_probability(7.0, 0.0, upper=6.0)) == 0.0


def test_one_normal_cdf_in_the_package():
    assert torch.equal(
        gaussian.gaussian_cdf(torch.tensor([-40.0, 0.0, 3.0])),
        torch.special.ndtr(
            torch.tensor([-40.0, 0.0, 3.0], dtype=torch.float64)
        ),
    )
    src = Path(gradsal.__file__).parent
    for pattern in ("ndtr(", "erf(", "norm.cdf"):
        users = sorted(
            str(p.relative_to(src))
            for p in src.rglob("*.py")
            if pattern in p.read_text()
        )
        assert users == (
            ["analysis/gaussian.py"] if pattern == "ndtr(" else []
        ), pattern
