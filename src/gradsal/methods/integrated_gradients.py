"""Integrated Gradients (chapter 07, The Wider Family; Sundararajan et al., 2017).

``IG_i(x) = (x_i - b_i) * integral_0^1 d f_c / d x_i (b + a (x - b)) da`` for a
baseline ``b``, approximated by a quadrature rule with ``n_steps`` nodes
``a_k`` and weights ``w_k``: ``IG ~ (x - b) * sum_k w_k grad f_c(b + a_k (x - b))``.
Completeness, ``sum_i IG_i = f_c(x) - f_c(b)``, holds for the exact integral of
any network that is Lipschitz along the path (every ReLU network); the gap of
the quadrature is what ``return_delta`` reports. The path points go through the
engine (:mod:`gradsal.engine`) in chunks, so memory is bounded by the batch
size and the folded fast path applies.

The rules and their names are Captum's (``method=`` of its
``IntegratedGradients``), with the same nodes. One difference: Captum's
``"riemann_trapezoid"`` puts its n nodes on ``linspace(0, 1, n)`` but gives
them the weights ``1/n`` (halved at the ends), which add up to ``1 - 1/n``
instead of 1, so its attributions are ``(n - 1)/n`` of the trapezoid rule's
and miss completeness by ``(f(x) - f(b))/n`` even for a linear model. Here the
trapezoid weights are those of the rule, ``1/(n - 1)`` halved at the ends.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from ..core import (
    Target,
    check_number,
    check_positive_int,
    forward,
    frozen,
    logit_gradient,
    prepare,
)
from ..engine import DEFAULT_BATCH_SIZE, Engine, check_precision, open_engine
from .base import attribution_method

__all__ = ["IG_RULES", "integrated_gradients", "quadrature"]

IG_RULES = (
    "gausslegendre",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
)


def quadrature(
    n_steps: int, method: str = "gausslegendre"
) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``a_k`` in [0, 1] and weights ``w_k`` of an ``n_steps``-point rule for integrals on [0, 1].

    ``"gausslegendre"`` is exact for polynomials of degree up to ``2 n - 1``;
    ``"riemann_left"``, ``"riemann_right"`` and ``"riemann_middle"`` use the
    left ends, right ends or midpoints of n equal cells, weight ``1/n`` each;
    ``"riemann_trapezoid"`` the trapezoid rule on ``n`` equally spaced nodes
    from 0 to 1 (needs ``n >= 2``). Chapter 07, The Wider Family.
    """
    n = check_positive_int(n_steps, "n_steps")
    if method not in IG_RULES:
        raise ValueError(f"method must be one of {IG_RULES}; got {method!r}")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return 0.5 * (nodes + 1.0), 0.5 * weights
    if method == "riemann_trapezoid":
        if n < 2:
            raise ValueError(
                "the trapezoid rule needs n_steps >= 2 (both ends of the path)"
            )
        weights = np.full(n, 1.0 / (n - 1))
        weights[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, n), weights
    cells = np.arange(n, dtype=np.float64)
    offset = {
        "riemann_left": 0.0,
        "riemann_right": 1.0,
        "riemann_middle": 0.5,
    }[method]
    return (cells + offset) / n, np.full(n, 1.0 / n)


def _baseline_batch(baseline: object, xb: torch.Tensor) -> torch.Tensor:
    """The baseline as a tensor of the batch's shape: zeros, a constant, or a tensor."""
    if baseline is None:
        return torch.zeros_like(xb)
    if isinstance(baseline, torch.Tensor):
        if not baseline.is_floating_point():
            raise TypeError(
                f"a baseline tensor must be floating-point; got dtype {baseline.dtype}"
            )
        if tuple(baseline.shape) == tuple(xb.shape):
            base = baseline
        elif tuple(baseline.shape) == tuple(xb.shape[1:]):
            base = baseline.unsqueeze(0).expand_as(xb)
        else:
            raise ValueError(
                f"baseline must have the shape of x {tuple(xb.shape[1:])} (or of the batch "
                f"{tuple(xb.shape)}); got {tuple(baseline.shape)}"
            )
        if not torch.isfinite(base).all():
            raise ValueError("baseline contains NaN or infinite values")
        return base.detach().to(device=xb.device, dtype=xb.dtype)
    value = check_number(
        baseline, "baseline", meaning="None, a number or a tensor of x's shape"
    )
    return torch.full_like(xb, value)


def _path_batches(
    engine: Engine,
    xb: torch.Tensor,
    base: torch.Tensor,
    targets: torch.Tensor,
    alphas: torch.Tensor,
    batch_size: int,
) -> Iterator[tuple[tuple[int, int, int], torch.Tensor, torch.Tensor]]:
    """``((example, first node, last node), points b + a_k (x - b), targets)`` chunk by chunk."""
    for b in range(xb.shape[0]):
        start = 0
        for count in engine.chunk_sizes(alphas.numel(), batch_size):
            a = (
                alphas[start : start + count]
                .to(dtype=xb.dtype)
                .view(-1, *[1] * (xb.ndim - 1))
            )
            points = base[b].unsqueeze(0) + a * (xb[b] - base[b]).unsqueeze(0)
            yield (b, start, start + count), points, targets[b].expand(count)
            start += count


def _integrate(
    engine: Engine,
    xb: torch.Tensor,
    base: torch.Tensor,
    targets: torch.Tensor,
    n_steps: int,
    method: str,
    batch_size: int,
) -> torch.Tensor:
    """``(x - b) * sum_k w_k grad f(b + a_k (x - b))`` for each example, sums in float64."""
    alphas, weights = (
        torch.from_numpy(v) for v in quadrature(n_steps, method)
    )
    weights = weights.to(xb.device)
    total = torch.zeros(xb.shape, dtype=torch.float64, device=xb.device)
    for (b, lo, hi), g in engine.map(
        logit_gradient,
        _path_batches(engine, xb, base, targets, alphas, batch_size),
    ):
        w = weights[lo:hi].view(-1, *[1] * (xb.ndim - 1))
        total[b] += (w * g.double()).sum(0)
    return ((xb - base).double() * total).to(xb.dtype)


def _integrated_gradients(
    model: nn.Module,
    xb: torch.Tensor,
    target: Target,
    *,
    baseline: object = None,
    n_steps: int = 50,
    method: str = "gausslegendre",
    batch_size: int | None = None,
    return_delta: bool = False,
    precision: str = "auto",
) -> torch.Tensor:
    """The kernel: IG of a batch, with the path points run in the calling thread.

    Run by SmoothGrad on each chunk of noisy copies; the engine that runs it has
    already chosen the module and precision, so ``precision`` is not used here.
    """
    if return_delta:
        raise ValueError(
            "return_delta is not available through smoothgrad(method=...), which averages attributions"
        )
    # given targets are checked by the path points' passes
    xb, _, targets = prepare(model, xb, target, True, checked_later=True)
    base = _baseline_batch(baseline, xb)
    return _integrate(
        Engine(model),
        xb,
        base,
        targets,
        n_steps,
        method,
        batch_size or DEFAULT_BATCH_SIZE,
    )


@attribution_method(_integrated_gradients, fast_path=True)
def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    baseline: float | torch.Tensor | None = None,
    n_steps: int = 50,
    method: str = "gausslegendre",
    batch_size: int | None = None,
    return_delta: bool = False,
    batched: bool | None = None,
    precision: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Integrated Gradients of the target logit along the straight path from ``baseline`` to ``x``.

    ``baseline``: None (zeros, i.e. a black image in pixel space), a number (a
    constant image), or a tensor of ``x``'s shape (e.g. a blurred copy; a single
    example's shape is shared by a batch). ``method`` is the quadrature rule
    (:data:`IG_RULES`, see :func:`quadrature`) and ``n_steps`` its number of
    nodes; the path points go through the model ``batch_size`` at a time
    (None: :data:`gradsal.engine.DEFAULT_BATCH_SIZE`) on the engine, with
    ``precision`` as for :func:`gradsal.smoothgrad`. The target defaults to the
    class predicted for ``x``. Returns the attribution, of ``x``'s shape; with
    ``return_delta=True`` also the completeness gap ``sum(IG) - (f_c(x) -
    f_c(b))`` per example, a (B,) tensor (a scalar tensor for one example).
    Chapter 07, The Wider Family (Sundararajan et al., 2017).
    """
    n_steps = check_positive_int(n_steps, "n_steps")
    quadrature(n_steps, method)  # checks the rule before any pass
    bs = (
        check_positive_int(batch_size, "batch_size", allow_none=True)
        or DEFAULT_BATCH_SIZE
    )
    check_precision(precision)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module; got {type(model).__name__}"
        )
    with frozen(model):
        # given targets are checked by the path points' passes
        xb, added, targets = prepare(
            model, x, target, batched, checked_later=True
        )
        base = _baseline_batch(baseline, xb)
        with open_engine(
            model,
            xb,
            items_per_example=n_steps,
            batch_size=bs,
            precision=precision,
        ) as engine:
            ig = _integrate(engine, xb, base, targets, n_steps, method, bs)
        if return_delta:  # the logits at both ends
            with torch.no_grad():
                ends = forward(model, torch.cat([xb, base]))
    if not return_delta:
        ig = ig.to(x.device)
        return ig[0] if added else ig
    picked = (
        ends.double()
        .gather(1, torch.cat([targets, targets]).view(-1, 1))
        .view(2, -1)
    )
    delta = ig.double().flatten(1).sum(1) - (picked[0] - picked[1])
    ig, delta = ig.to(x.device), delta.to(x.device)
    return (ig[0], delta[0]) if added else (ig, delta)
