"""What SmoothGrad estimates and how fast its error falls (chapter 04, What SmoothGrad Estimates).

Chapter 04 (Taylor expansions, variance, proofs) shows what SmoothGrad
(Smilkov et al., 2017) estimates and checks each statement numerically with
the helpers here: Stein's (1981) estimate of the gradient of the
Gaussian-smoothed logit from forward passes only (:func:`stein_projections`,
with SmoothGrad's own noise rule and draw), the 1/N variance law of a mean of
N noisy gradients (:func:`variance_vs_n`, :func:`loglog_slope`) and Jensen's
gap of mean-of-abs SmoothGrad (:func:`jensen_gap`; its closed form for one
Gaussian gradient is :func:`gradsal.analysis.gaussian.folded_normal_mean`). The
Taylor view of noise-adding methods follows Seo et al. (2018).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..core import (
    Target,
    as_generator,
    check_number,
    check_positive_int,
    forward,
    frozen,
    prepare,
)
from ..methods import gaussian_noise, noise_sigma

__all__ = [
    "jensen_gap",
    "loglog_slope",
    "stein_projections",
    "variance_vs_n",
]


def jensen_gap(samples: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Jensen's gap ``mean|g| - |mean g|`` of a pool of gradients, per entry.

    Computed as ``2 * min(mean g+, mean g-)`` (g+ and g- the positive and negative
    parts), which equals the difference exactly and is never negative. It is the
    part of mean-of-abs SmoothGrad that comes from the gradient changing sign under
    the noise (chapter 04, What SmoothGrad Estimates).
    """
    if (
        not isinstance(samples, torch.Tensor)
        or not samples.is_floating_point()
    ):
        raise TypeError("samples must be a floating-point tensor of gradients")
    if samples.numel() == 0 or samples.shape[dim] == 0:
        raise ValueError(
            "samples is empty; expected at least one gradient along dim"
        )
    pos = samples.clamp_min(0).mean(dim)
    neg = (-samples).clamp_min(0).mean(dim)
    return 2.0 * torch.minimum(pos, neg)


def variance_vs_n(samples: torch.Tensor, ns: Sequence[int]) -> torch.Tensor:
    """Total variance of the mean of ``n`` samples, for each ``n`` in ``ns``, from one pool.

    ``samples`` holds S independent draws along its first axis (e.g. the output of
    :func:`gradsal.noisy_attributions`). For each n the first ``(S // n) * n`` draws
    are split into ``S // n`` disjoint batches of n; the unbiased sample variance of
    the batch means is taken entry by entry and summed over entries. Its
    expectation is ``tr Cov(g) / n`` (chapter 04, What SmoothGrad Estimates). Every n
    needs at least two batches. Returns a float64 tensor of ``len(ns)`` values.
    """
    if (
        not isinstance(samples, torch.Tensor)
        or not samples.is_floating_point()
    ):
        raise TypeError(
            "samples must be a floating-point tensor with the draws along axis 0"
        )
    s = samples.shape[0]
    out = []
    for n in ns:
        n = check_positive_int(n, "every n in ns")
        k = s // n
        if k < 2:
            raise ValueError(
                f"n = {n} leaves fewer than two disjoint batches in a pool of {s}"
            )
        means = (
            samples[: k * n].double().reshape(k, n, *samples.shape[1:]).mean(1)
        )
        out.append(means.var(0, correction=1).sum())
    return torch.stack(out)


def loglog_slope(
    x: Sequence[float] | np.ndarray | torch.Tensor,
    y: Sequence[float] | np.ndarray | torch.Tensor,
) -> tuple[float, float]:
    """Least-squares line through ``(log x, log y)``: returns ``(slope, intercept)``.

    A power law ``y = c x^p`` gives slope p; chapter 04, What SmoothGrad Estimates, fits
    the variance of SmoothGrad against N and expects p = -1. Natural logarithms.
    """
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if xa.shape != ya.shape or xa.ndim != 1 or xa.size < 2:
        raise ValueError(
            "x and y must be 1-D with the same length, at least 2"
        )
    if not (
        np.isfinite(xa).all()
        and np.isfinite(ya).all()
        and (xa > 0).all()
        and (ya > 0).all()
    ):
        raise ValueError("x and y must be positive and finite")
    lx, ly = np.log(xa), np.log(ya)
    slope, intercept = np.polyfit(lx, ly, 1)
    return float(slope), float(intercept)


def stein_projections(
    model: nn.Module,
    x: torch.Tensor,
    directions: torch.Tensor,
    target: Target = None,
    *,
    n_pairs: int = 128,
    noise_level: float = 0.15,
    batch_size: int | None = None,
    generator: torch.Generator | int | None = 0,
) -> torch.Tensor:
    """Stein's estimate of the smoothed gradient, projected on fixed directions, one value per noise pair.

    For one example ``x`` and ``eps ~ N(0, sigma^2 I)`` with
    ``sigma = noise_level * (x.max() - x.min())``, drawn as SmoothGrad draws
    (:func:`gradsal.methods.noise_sigma`,
    :func:`gradsal.methods.gaussian_noise`), returns the
    (n_pairs, K) values ``(u_k . eps) * (f(x + eps) - f(x - eps)) / (2 sigma^2)``
    for the K directions ``u_k`` (``directions`` has shape (K, *x.shape), or
    x.shape for one direction). Their mean is an unbiased estimate of
    ``u_k . grad (f * phi_sigma)(x)``, the projected gradient of the
    Gaussian-smoothed logit (Stein's lemma; Stein, 1981), computed from forward passes only;
    the antithetic pair removes the f(x) term, which has mean zero but large
    variance. ``batch_size`` is the number of pairs per forward pass (default 8).
    ``target`` defaults to the class predicted for ``x``. Chapter 04,
    What SmoothGrad Estimates.
    """
    check_positive_int(n_pairs, "n_pairs")
    check_number(
        noise_level,
        "noise_level",
        minimum=0.0,
        strict=True,
        meaning="Stein's estimator divides by sigma^2",
    )
    check_positive_int(batch_size, "batch_size", allow_none=True)
    gen = as_generator(generator)
    if (
        not isinstance(directions, torch.Tensor)
        or not directions.is_floating_point()
    ):
        raise TypeError(
            "directions must be a floating-point tensor of shape (K, *x.shape)"
        )
    if tuple(directions.shape) == tuple(x.shape):
        directions = directions.unsqueeze(0)
    if tuple(directions.shape[1:]) != tuple(x.shape):
        raise ValueError(
            f"directions must have shape (K, *{tuple(x.shape)}); got {tuple(directions.shape)}"
        )
    with frozen(model):
        xb, _, targets = prepare(model, x, target, batched=False)
        image = xb[0]
        sigma = noise_sigma(image, noise_level)
        if sigma <= 0:
            raise ValueError(
                "x is constant, so sigma = noise_level * (max - min) is 0"
            )
        u = (
            directions.detach()
            .to(device=image.device, dtype=torch.float64)
            .reshape(directions.shape[0], -1)
        )
        out = []
        step = batch_size or 8
        for start in range(0, n_pairs, step):
            count = min(step, n_pairs - start)
            noise = gaussian_noise(image.shape, count, gen)
            eps = sigma * noise.to(device=image.device, dtype=image.dtype)
            batch = torch.cat([image + eps, image - eps])
            with torch.no_grad():
                logits = forward(model, batch).double()
            picked = logits.gather(
                1, targets[0].expand(2 * count).view(-1, 1)
            ).view(2, count)
            half_diff = (picked[0] - picked[1]) / 2.0
            proj = eps.reshape(count, -1).double() @ u.T
            out.append(proj * half_diff.unsqueeze(1) / sigma**2)
    return torch.cat(out).to(directions.device)
