"""Closed forms under Gaussian noise (chapter 03, ReLU Boundaries; chapter 04, What SmoothGrad Estimates).

SmoothGrad (Smilkov et al., 2017) averages gradients over Gaussian noise, and
for one ReLU-type unit that average has a closed form in the normal
distribution function: :func:`gaussian_cdf` is the package's one Phi. Chapter
03 derives the smoothed ReLU and its derivative, a probit-smoothed step
(:func:`smoothed_relu`, :func:`smoothed_relu_derivative`,
:func:`smoothed_relu6_derivative`), the probability that the noise leaves a unit
between its kinks (:func:`gate_probability`) or changes its state
(:func:`flip_probability`); chapter 04, What SmoothGrad Estimates, measures the
Jensen gap of mean-of-abs SmoothGrad against the mean of a folded normal
(:func:`folded_normal_mean`).
The unit states are those of :mod:`gradsal.analysis.regions`; by default a unit
is a plain ReLU (one kink at 0), and ``upper=6.0`` makes it a ReLU6.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .regions import BELOW, BETWEEN, activation_states

__all__ = [
    "flip_probability",
    "folded_normal_mean",
    "gate_probability",
    "gaussian_cdf",
    "smoothed_relu",
    "smoothed_relu6_derivative",
    "smoothed_relu_derivative",
]


def _t(v: torch.Tensor | float | Sequence[float]) -> torch.Tensor:
    return torch.as_tensor(v, dtype=torch.float64)


def gaussian_cdf(z: torch.Tensor | float) -> torch.Tensor:
    """The standard normal distribution function Phi(z), in float64: the package's one normal CDF.

    :func:`torch.special.ndtr`, accurate in both tails. Chapter 03, ReLU
    Boundaries; chapter 04, What SmoothGrad Estimates.
    """
    return torch.special.ndtr(_t(z))


def _check_unit(w: torch.Tensor, sigma: torch.Tensor) -> None:
    if bool((sigma < 0).any()):
        raise ValueError("sigma must be >= 0")
    if bool((w == 0).any()):
        raise ValueError(
            "w must be nonzero (with w = 0 the unit does not depend on x)"
        )


def smoothed_relu_derivative(
    x: torch.Tensor | float, w: float = 1.0, b: float = 0.0, sigma: float = 1.0
) -> torch.Tensor:
    """E[f'(x + eps)] for f(x) = relu(w x + b) and eps ~ N(0, sigma^2): ``w * Phi((w x + b) / (|w| sigma))``.

    The expected gate of the unit is the probability that it is active, so the
    averaged derivative is a probit-smoothed step; with ``sigma = 0`` it is the
    step itself, ``w * 1[w x + b > 0]`` (autograd's convention at the kink). With
    ``w = 1, b = 0`` it is ``Phi(x / sigma)``. Theorem of chapter 03, ReLU Boundaries.
    """
    x, w, b, sigma = _t(x), _t(w), _t(b), _t(sigma)
    _check_unit(w, sigma)
    z = w * x + b
    s = w.abs() * sigma
    gate = torch.where(
        s > 0, gaussian_cdf(z / torch.where(s > 0, s, 1.0)), (z > 0).double()
    )
    return w * gate


def gate_probability(
    z: torch.Tensor | float,
    s: torch.Tensor | float,
    lower: float = 0.0,
    upper: float | None = None,
) -> torch.Tensor:
    """Probability that a unit at pre-activation ``z`` is BETWEEN its kinks after z moves by N(0, s^2).

    Equals ``Phi((upper - z) / s) - Phi((lower - z) / s)``; the first term is 1 when
    ``upper`` is None, the default (a plain ReLU); pass ``upper=6.0`` for ReLU6.
    For ReLU and ReLU6 it is the averaged 0/1 gate that a gradient passes
    through. With ``s = 0`` it is the state itself, ``1[lower < z < upper]``.
    Chapter 03, ReLU Boundaries.
    """
    z, s = _t(z), _t(s)
    if bool((s < 0).any()):
        raise ValueError("s must be >= 0")
    safe = torch.where(s > 0, s, 1.0)
    top = (
        torch.ones_like(z)
        if upper is None
        else gaussian_cdf((upper - z) / safe)
    )
    smooth = top - gaussian_cdf((lower - z) / safe)
    return torch.where(
        s > 0, smooth, (activation_states(z, lower, upper) == BETWEEN).double()
    )


def smoothed_relu6_derivative(
    x: torch.Tensor | float,
    w: float = 1.0,
    b: float = 0.0,
    sigma: float = 1.0,
    upper: float = 6.0,
) -> torch.Tensor:
    """E[f'(x + eps)] for f(x) = relu6(w x + b), eps ~ N(0, sigma^2).

    Equals ``w * (Phi(z / s) - Phi((z - upper) / s))`` with ``z = w x + b`` and
    ``s = |w| sigma``: ``w`` times the probability that the unit lands strictly
    between its two kinks (:func:`gate_probability` with ``upper``). With ``sigma = 0`` it is
    ``w * 1[0 < z < upper]``. Theorem of chapter 03, ReLU Boundaries.
    """
    x, w, b, sigma = _t(x), _t(w), _t(b), _t(sigma)
    _check_unit(w, sigma)
    return w * gate_probability(w * x + b, w.abs() * sigma, 0.0, upper)


def smoothed_relu(
    x: torch.Tensor | float, w: float = 1.0, b: float = 0.0, sigma: float = 1.0
) -> torch.Tensor:
    """E[relu(w (x + eps) + b)] for eps ~ N(0, sigma^2): ``z Phi(z / s) + s phi(z / s)``.

    Here ``z = w x + b`` and ``s = |w| sigma``; its derivative in x is
    :func:`smoothed_relu_derivative`. With ``sigma = 0`` it is ``relu(z)``.
    Chapter 03, ReLU Boundaries.
    """
    x, w, b, sigma = _t(x), _t(w), _t(b), _t(sigma)
    if bool((sigma < 0).any()):
        raise ValueError("sigma must be >= 0")
    z = w * x + b
    s = w.abs() * sigma
    safe = torch.where(s > 0, s, 1.0)
    u = z / safe
    smooth = z * gaussian_cdf(u) + s * torch.exp(-0.5 * u * u) / math.sqrt(
        2 * math.pi
    )
    return torch.where(s > 0, smooth, z.clamp(min=0))


def flip_probability(
    z: torch.Tensor | float,
    s: torch.Tensor | float,
    lower: float = 0.0,
    upper: float | None = None,
) -> torch.Tensor:
    """Probability that a unit at pre-activation ``z`` changes state when z moves by N(0, s^2).

    The states are the intervals ``(-inf, lower]``, ``(lower, upper)`` and
    ``[upper, inf)`` (no upper one if ``upper`` is None, the default, a plain
    ReLU; pass ``upper=6.0`` for ReLU6); the answer is one minus
    the Gaussian mass of the interval that holds ``z``. For a first-layer unit,
    whose pre-activation is affine in the input, ``s = sigma * ||row of the
    Jacobian||`` exactly. Chapter 03, ReLU Boundaries.
    """
    z, s = _t(z), _t(s)
    if bool((s < 0).any()):
        raise ValueError("s must be >= 0")
    state = activation_states(z, lower, upper)
    inf = torch.full_like(z, math.inf)
    low = torch.full_like(z, float(lower))
    up = inf if upper is None else torch.full_like(z, float(upper))
    # the interval of z's state; its end points carry no Gaussian mass
    lo = torch.where(
        state == BELOW, -inf, torch.where(state == BETWEEN, low, up)
    )
    hi = torch.where(
        state == BELOW, low, torch.where(state == BETWEEN, up, inf)
    )
    safe = torch.where(s > 0, s, 1.0)
    stay = gaussian_cdf((hi - z) / safe) - gaussian_cdf((lo - z) / safe)
    return torch.where(s > 0, 1.0 - stay, torch.zeros_like(stay))


def folded_normal_mean(
    mu: torch.Tensor | float, s: torch.Tensor | float
) -> torch.Tensor:
    """``E|G|`` for ``G ~ N(mu, s^2)``: ``s sqrt(2/pi) exp(-mu^2 / 2 s^2) + mu (1 - 2 Phi(-mu / s))``.

    At ``mu = 0`` it is ``s * sqrt(2 / pi)``, about ``0.80 s``: the floor that
    mean-of-abs SmoothGrad reaches at a pixel whose gradient is pure noise, however
    many samples are averaged (chapter 04, What SmoothGrad Estimates: Jensen's
    gap). ``s`` must be positive.
    """
    mu = _t(mu)
    s = _t(s)
    if (s <= 0).any() or not torch.isfinite(s).all():
        raise ValueError("s must be finite and > 0")
    t = mu / s
    return s * math.sqrt(2.0 / math.pi) * torch.exp(-0.5 * t * t) + mu * (
        1.0 - 2.0 * gaussian_cdf(-t)
    )
