"""Activation patterns and the linear regions of piecewise-linear networks (chapter 03, ReLU Boundaries).

A network built from affine maps (convolutions, batch normalisation in eval mode,
pooling, linear layers, skip connections) and ReLU-type activations is piecewise
linear: every unit is in one of finitely many *states* (below its lower kink,
between its kinks, above its upper kink), the tuple of all states is the
*activation pattern*, and inside the set of inputs that share one pattern every
logit is affine (Montufar et al., 2014; Hanin and Rolnick, 2019). Chapter 03,
ReLU Boundaries, proves this and measures it on EfficientNet-Lite0. This module
records patterns with forward hooks (and removes the hooks afterwards), scans a
logit and its gradient along a line ``x + t * direction`` while counting the
units that change state (after Smilkov et al., 2017, figure 2), measures how
many units SmoothGrad's noise flips (:func:`flip_sweep`, with the noise rule of
:mod:`gradsal.methods`), and gives the row norms that turn input
noise into pre-activation noise. The closed forms for one unit under Gaussian
noise are :mod:`gradsal.analysis.gaussian`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..core import (
    as_batch,
    as_generator,
    check_positive_int,
    device_of,
    forward,
    frozen,
    resolve_targets,
)
from ..methods import gaussian_noise, noise_sigma

__all__ = [
    "ABOVE",
    "BELOW",
    "BETWEEN",
    "FlipSweep",
    "LineScan",
    "PatternRecorder",
    "activation_kinks",
    "activation_pattern",
    "activation_states",
    "affine_row_norms",
    "flip_sweep",
    "line_scan",
    "pattern_changes",
]

# Unit states. A unit BETWEEN its kinks passes the gradient on unchanged. BELOW
# passes nothing for ReLU, ReLU6 and Hardtanh, and the gradient times the negative
# slope for LeakyReLU; ABOVE (only with an upper kink) passes nothing. torch
# differentiates relu at 0 and relu6 at 0 and 6 as 0, so a unit exactly on a kink
# counts as BELOW (z <= lower) or ABOVE (z >= upper).
BELOW, BETWEEN, ABOVE = 0, 1, 2

# pattern_changes compares this many units at a time (a block of a few copies'
# states stays in the processor's cache)
_UNITS_PER_BLOCK = 2**18


def activation_kinks(module: nn.Module) -> tuple[float, float | None] | None:
    """The kinks ``(lower, upper)`` of a piecewise-linear activation module, else None.

    ``nn.ReLU`` and ``nn.LeakyReLU`` have one kink, at 0 (``upper`` is None);
    ``nn.Hardtanh`` and its subclass ``nn.ReLU6`` have two, ``(min_val, max_val)``,
    i.e. ``(0, 6)`` for ReLU6. Activations applied as functions inside a
    ``forward`` (``F.relu``) are not modules and cannot be seen. Chapter 03, ReLU Boundaries.
    """
    if isinstance(module, nn.Hardtanh):
        return float(module.min_val), float(module.max_val)
    if isinstance(module, (nn.ReLU, nn.LeakyReLU)):
        return 0.0, None
    return None


def activation_states(
    z: torch.Tensor, lower: float = 0.0, upper: float | None = None
) -> torch.Tensor:
    """State of every unit with pre-activation ``z``: BELOW (0), BETWEEN (1) or ABOVE (2).

    BELOW means ``z <= lower``, ABOVE ``z >= upper``, BETWEEN the open interval in
    between. ``upper=None`` (the default) is a unit with one kink, as ``nn.ReLU``
    and ``nn.LeakyReLU``, which is never ABOVE; pass ``upper=6.0`` for ``nn.ReLU6``
    (:func:`activation_kinks` reads both kinks off a module). Autograd passes the
    gradient unchanged through BETWEEN units; through BELOW units it passes
    nothing for ReLU, ReLU6 and Hardtanh but the gradient times the negative slope
    for LeakyReLU; through ABOVE units nothing. Returns an int8 tensor of the
    shape of ``z``. Chapter 03, ReLU Boundaries.
    """
    # a bool tensor read as int8 holds the same 0/1 bytes: no conversion pass
    states = torch.gt(z, lower).view(torch.int8)
    if upper is not None:
        states.add_(torch.ge(z, upper).view(torch.int8))
    return states


class PatternRecorder:
    """Context manager that records the state of every ReLU-type unit in each forward pass.

    On entry it registers a forward pre-hook (which sees the pre-activation before
    an in-place activation overwrites it) on every module that
    :func:`activation_kinks` recognises; on exit it removes every hook it added,
    even after an exception, leaving the model as it was. A module called several
    times per forward pass (EfficientNet-Lite's blocks reuse one ReLU6 for both of
    their activations) is recorded once per call. :meth:`take` returns the states
    of the passes recorded so far as one (B, U) int8 tensor, units in call order,
    and clears the log; :attr:`layout` then lists ``(module name, units per example)``
    per call. The first axis of every activation input is taken to be the batch.
    Chapter 03, ReLU Boundaries.
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"model must be a torch.nn.Module; got {type(model).__name__}"
            )
        self.model = model
        self.layout: list[tuple[str, int]] = []
        self._calls: list[tuple[str, torch.Tensor]] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> PatternRecorder:
        for name, module in self.model.named_modules():
            kinks = activation_kinks(module)
            if kinks is not None:
                self._handles.append(
                    module.register_forward_pre_hook(
                        self._hook(name or "<model>", kinks)
                    )
                )
        if not self._handles:
            self.__exit__(None, None, None)
            raise ValueError(
                "the model has no nn.ReLU, nn.LeakyReLU, nn.ReLU6 or nn.Hardtanh modules; "
                "activations applied as functions cannot be recorded"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str, kinks: tuple[float, float | None]) -> Callable:
        lower, upper = kinks

        def hook(module: nn.Module, args: tuple) -> None:
            z = args[0].detach()
            self._calls.append(
                (
                    name,
                    activation_states(z, lower, upper).reshape(z.shape[0], -1),
                )
            )

        return hook

    def take(self) -> torch.Tensor:
        """States recorded since the last call, as a (B, U) int8 tensor; clears the log."""
        if not self._calls:
            raise RuntimeError(
                "no forward pass was recorded; run the model inside the `with` block first"
            )
        self.layout = [(name, int(s.shape[1])) for name, s in self._calls]
        states = torch.cat([s for _, s in self._calls], dim=1)
        self._calls.clear()
        return states


def activation_pattern(
    model: nn.Module, x: torch.Tensor, *, batched: bool | None = None
) -> torch.Tensor:
    """The activation pattern of ``x``: one int8 state per ReLU-type unit.

    Returns (U,) for one example, (B, U) for a batch, in the order in which the
    units are computed (see :class:`PatternRecorder`). No gradient is taken; the
    model's mode and hooks are as they were afterwards. Chapter 03, ReLU Boundaries.
    """
    xb, added = as_batch(x, batched)
    with frozen(model), torch.no_grad(), PatternRecorder(model) as rec:
        forward(model, xb.detach().to(device_of(model, xb.device)))
        states = rec.take()
    return states[0] if added else states


def pattern_changes(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Number of units whose state differs between patterns ``a`` and ``b`` (last axis).

    Patterns broadcast, so ``pattern_changes(clean, noisy_batch)`` counts per copy.
    Chapter 03, ReLU Boundaries.
    """
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"patterns have different numbers of units: {a.shape[-1]} and {b.shape[-1]}"
        )
    # In blocks of units: summing the whole (B, U) comparison at once first
    # widens it to int64, 8 bytes a unit (hundreds of MB for EfficientNet-Lite0's
    # six million units), and that was ten times slower than these blocks.
    counts = torch.zeros(
        torch.broadcast_shapes(a.shape[:-1], b.shape[:-1]), dtype=torch.int64
    )
    for start in range(0, a.shape[-1], _UNITS_PER_BLOCK):
        block = slice(start, start + _UNITS_PER_BLOCK)
        counts += (a[..., block] != b[..., block]).sum(
            dim=-1, dtype=torch.int32
        )
    return counts


# ---------------------------------------------------------------------------
# the logit and its gradient along a line


@dataclass
class LineScan:
    """Result of :func:`line_scan` (chapter 03, ReLU Boundaries).

    ``logit[k]`` is the target logit at ``x + ts[k] * direction``;
    ``directional[k]`` its derivative in t (the gradient dotted with the direction);
    ``partial[k]`` the partial derivative with respect to the input element
    ``pixel``; ``changes[k]`` the number of units whose state differs between
    ``ts[k]`` and ``ts[k + 1]``; ``grad_change[k]`` the largest absolute difference
    between the full gradients there. ``n_units`` counts the recorded units.
    """

    ts: torch.Tensor
    logit: torch.Tensor
    directional: torch.Tensor
    partial: torch.Tensor
    changes: torch.Tensor
    grad_change: torch.Tensor
    n_units: int
    target: int
    pixel: tuple[int, ...]
    layout: list[tuple[str, int]] = field(default_factory=list)


def line_scan(
    model: nn.Module,
    x: torch.Tensor,
    direction: torch.Tensor,
    ts: torch.Tensor | Sequence[float],
    target: int | None = None,
    *,
    pixel: Sequence[int] | None = None,
    batch_size: int = 5,
    progress: bool = False,
) -> LineScan:
    """The target logit, its gradient and the activation pattern along ``x + t * direction``.

    ``x`` and ``direction`` are one example each (e.g. (C, H, W)); ``ts`` is an
    increasing sequence of T values. The points go through the model
    ``batch_size`` at a time with one backward pass per batch; patterns are
    compared between consecutive t on the fly, so memory does not grow with T.
    ``target`` defaults to the class predicted at ``x``; ``pixel`` (an index into
    one example, e.g. ``(c, i, j)``) defaults to the element with the largest
    gradient magnitude at ``x + ts[0] * direction``. Chapter 03, ReLU Boundaries
    (after Smilkov et al., 2017, figure 2).
    """
    ts = torch.as_tensor(ts, dtype=torch.float64).flatten()
    if ts.numel() < 2 or not bool((ts[1:] > ts[:-1]).all()):
        raise ValueError(
            "ts must hold at least two strictly increasing values"
        )
    if not isinstance(direction, torch.Tensor) or direction.shape != x.shape:
        raise ValueError(
            f"direction must be a tensor of the shape of x {tuple(x.shape)}"
        )
    check_positive_int(batch_size, "batch_size")
    as_batch(
        x, batched=False
    )  # the same input checks as the gradient functions
    with frozen(model):
        device = device_of(model, x.device)
        x0 = x.detach().to(device)
        d = direction.detach().to(device=device, dtype=x.dtype)
        with torch.no_grad():
            tgt = int(
                resolve_targets(target, forward(model, x0.unsqueeze(0)))[0]
            )
        logits, directional, partials, changes, grad_change = (
            [],
            [],
            [],
            [],
            [],
        )
        prev_states = prev_grad = None
        idx = None if pixel is None else tuple(int(i) for i in pixel)
        # float32 images on the CPU: channels-last convolutions are about a
        # quarter faster (values equal up to float rounding; not for float64)
        channels_last = (
            x0.ndim == 3 and x0.dtype == torch.float32 and device.type == "cpu"
        )
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=ts.numel(), desc="line scan", unit="point")
        try:
            with PatternRecorder(model) as rec:
                for start in range(0, ts.numel(), batch_size):
                    tb = ts[start : start + batch_size].to(
                        device=device, dtype=x.dtype
                    )
                    points = x0.unsqueeze(0) + tb.view(
                        -1, *[1] * x0.ndim
                    ) * d.unsqueeze(0)
                    if channels_last:
                        points = points.contiguous(
                            memory_format=torch.channels_last
                        )
                    points.requires_grad_(True)
                    with torch.enable_grad():
                        out = forward(model, points)[:, tgt]
                        (grad,) = torch.autograd.grad(out.sum(), points)
                    states = rec.take()
                    if idx is None:
                        idx = tuple(
                            int(i)
                            for i in torch.unravel_index(
                                grad[0].abs().argmax(), grad[0].shape
                            )
                        )
                    logits.append(out.detach())
                    directional.append((grad * d).flatten(1).sum(1))
                    partials.append(grad[(slice(None), *idx)])
                    # consecutive differences, including the pair that straddles two batches
                    both_s = (
                        states
                        if prev_states is None
                        else torch.cat([prev_states, states])
                    )
                    both_g = (
                        grad
                        if prev_grad is None
                        else torch.cat([prev_grad, grad])
                    )
                    changes.append(pattern_changes(both_s[1:], both_s[:-1]))
                    grad_change.append(
                        (both_g[1:] - both_g[:-1]).flatten(1).abs().amax(1)
                    )
                    prev_states, prev_grad = states[-1:], grad[-1:]
                    if bar is not None:
                        bar.update(tb.numel())
        finally:
            if bar is not None:
                bar.close()
    return LineScan(
        ts=ts,
        logit=torch.cat(logits).double().cpu(),
        directional=torch.cat(directional).double().cpu(),
        partial=torch.cat(partials).double().cpu(),
        changes=torch.cat(changes).cpu(),
        grad_change=torch.cat(grad_change).double().cpu(),
        n_units=int(prev_states.shape[1]),
        target=tgt,
        pixel=idx,
        layout=rec.layout,
    )


# ---------------------------------------------------------------------------
# how many units noise flips


@dataclass
class FlipSweep:
    """Result of :func:`flip_sweep` (chapter 03, ReLU Boundaries).

    ``flipped[l, n, k]`` is the fraction of the units of activation call ``k``
    (see ``layout``) whose state in noisy copy ``n`` at noise level
    ``noise_levels[l]`` differs from their state on the clean input;
    :attr:`fraction` pools all units. ``clean`` is the clean input's pattern.
    ``cosine[l, n]`` is the cosine similarity between the copy's gradient and the
    clean gradient when gradients were asked for, else None.
    """

    noise_levels: torch.Tensor
    sigmas: torch.Tensor
    flipped: torch.Tensor
    layout: list[tuple[str, int]]
    clean: torch.Tensor
    noise: torch.Tensor | None = None
    cosine: torch.Tensor | None = None

    @property
    def fraction(self) -> torch.Tensor:
        """(L, N) fraction of all recorded units that flipped, per level and copy."""
        sizes = torch.tensor([n for _, n in self.layout], dtype=torch.float64)
        return (self.flipped * sizes).sum(-1) / sizes.sum()


def flip_sweep(
    model: nn.Module,
    x: torch.Tensor,
    noise_levels: Sequence[float],
    *,
    n_copies: int = 3,
    target: int | None = None,
    gradients: bool = False,
    keep_noise: bool = False,
    batch_size: int = 5,
    generator: torch.Generator | int | None = 0,
) -> FlipSweep:
    """Fraction of ReLU-type units whose state Gaussian noise flips, per noise level.

    For each level, ``n_copies`` copies ``x + sigma * xi`` with ``xi ~ N(0, I)`` and
    ``sigma = level * (x.max() - x.min())`` go through the model: SmoothGrad's
    noise (Smilkov et al., 2017), by its own rule and draw
    (:func:`gradsal.methods.noise_sigma`,
    :func:`gradsal.methods.gaussian_noise`), level after level from one
    ``generator``. Their patterns are compared with the clean one, unit by unit
    and per activation call. With ``gradients=True`` the copies' target-logit
    gradients are compared with the clean gradient by cosine similarity (one
    backward pass per batch). ``keep_noise=True`` returns the standard-normal
    draws ``xi`` (L, N, ...). ``x`` is one example. Chapter 03, ReLU Boundaries.
    """
    levels = torch.as_tensor(noise_levels, dtype=torch.float64).flatten()
    if (
        levels.numel() == 0
        or bool((levels < 0).any())
        or not bool(torch.isfinite(levels).all())
    ):
        raise ValueError(
            "noise_levels must be a non-empty sequence of finite numbers >= 0"
        )
    check_positive_int(n_copies, "n_copies")
    check_positive_int(batch_size, "batch_size")
    as_batch(
        x, batched=False
    )  # the same input checks as the gradient functions
    gen = as_generator(generator)
    sigmas = [noise_sigma(x, level) for level in levels.tolist()]
    with frozen(model), PatternRecorder(model) as rec:
        device = device_of(model, x.device)
        x0 = x.detach().to(device).unsqueeze(0)

        def run(points: torch.Tensor, tgt: torch.Tensor | None):
            if not gradients:
                with torch.no_grad():
                    out = forward(model, points)
                return rec.take(), out, None
            points = points.detach().requires_grad_(True)
            with torch.enable_grad():
                out = forward(model, points)
                t = (
                    resolve_targets(target, out.detach())
                    if tgt is None
                    else tgt.expand(points.shape[0])
                )
                (grad,) = torch.autograd.grad(
                    out.gather(1, t.view(-1, 1)).sum(), points
                )
            return rec.take(), out.detach(), grad

        clean, clean_out, clean_grad = run(x0, None)
        tgt = resolve_targets(target, clean_out)
        layout = list(rec.layout)
        bounds = torch.tensor([0] + [n for _, n in layout]).cumsum(0)
        flipped = torch.zeros(
            levels.numel(), n_copies, len(layout), dtype=torch.float64
        )
        cosine = (
            torch.zeros(levels.numel(), n_copies, dtype=torch.float64)
            if gradients
            else None
        )
        noises = (
            torch.zeros(levels.numel(), n_copies, *x.shape)
            if keep_noise
            else None
        )
        for li, sigma in enumerate(sigmas):
            for start in range(0, n_copies, batch_size):
                count = min(batch_size, n_copies - start)
                xi = gaussian_noise(x.shape, count, gen)
                if noises is not None:
                    noises[li, start : start + count] = xi.cpu()
                points = x0 + sigma * xi.to(device=device, dtype=x.dtype)
                states, _, grad = run(points, tgt)
                diff = (states != clean).to(torch.float64).cumsum(1)
                diff = torch.cat(
                    [
                        torch.zeros(
                            count, 1, dtype=torch.float64, device=diff.device
                        ),
                        diff,
                    ],
                    1,
                )
                per_call = (diff[:, bounds[1:]] - diff[:, bounds[:-1]]) / (
                    bounds[1:] - bounds[:-1]
                ).to(diff)
                flipped[li, start : start + count] = per_call.cpu()
                if grad is not None:
                    cosine[li, start : start + count] = (
                        torch.nn.functional.cosine_similarity(
                            grad.flatten(1).double(),
                            clean_grad.flatten(1).double(),
                        ).cpu()
                    )
    return FlipSweep(
        noise_levels=levels,
        sigmas=torch.tensor(sigmas, dtype=torch.float64),
        flipped=flipped,
        layout=layout,
        clean=clean[0].cpu(),
        noise=noises,
        cosine=cosine,
    )


def affine_row_norms(
    fn: Callable[[torch.Tensor], torch.Tensor],
    input_shape: Sequence[int],
    period: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Euclidean norms of the rows of the Jacobian of an affine, spatially local map.

    ``fn`` maps a batch (B, C, H, W) affinely to outputs (B, ...), and each output
    depends only on inputs within a window of at most ``period`` rows and
    ``period`` columns (e.g. ``period = 3`` for a 3x3 convolution of any stride).
    Probing with the ``C * period**2`` indicator images of the inputs whose channel
    and row and column residues mod ``period`` agree puts at most one input of each
    window in each probe, so the squares of ``fn(probe) - fn(0)`` add up to the
    squared row norms exactly; the probes are made with ``dtype`` on ``device`` (those
    of ``fn``'s parameters). Returns a float64 tensor of the shape of one output. Under
    noise ``N(0, sigma^2 I)`` the output moves by ``N(0, (sigma * norm)^2)`` unit
    by unit. Chapter 03, ReLU Boundaries.
    """
    c, h, w = (int(v) for v in input_shape)
    period = check_positive_int(period, "period")
    probes = torch.zeros(
        c * period * period + 1, c, h, w, dtype=dtype, device=device
    )
    k = 1
    for ch in range(c):
        for r in range(period):
            for q in range(period):
                probes[k, ch, r::period, q::period] = 1.0
                k += 1
    with torch.no_grad():
        out = fn(probes).double()
    return (out[1:] - out[:1]).square().sum(0).sqrt()
