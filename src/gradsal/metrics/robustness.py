"""Is a saliency map robust? Max-sensitivity (chapter 05, Sanity Checks).

Max-sensitivity (Yeh et al., 2019): the largest relative change of an
explanation under small perturbations of the input, estimated from seeded draws
in an L-infinity ball. Several explanations of one input can share the
perturbations, so that methods are compared on identical inputs: chapter 05
compares the vanilla gradient with SmoothGrad (Smilkov et al., 2017) and the
model-free baselines this way. Next to the relative Frobenius change it can
report a rank distance, 1 - Spearman correlation, which no monotone rescaling of
a map changes: squaring a map doubles its relative Frobenius change to first
order, but leaves its pixel ranking, and so the rank distance, as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..core import as_generator, check_input, check_number, check_positive_int
from ..maps import rank_correlation

__all__ = ["MaxSensitivity", "max_sensitivity"]


@dataclass(frozen=True)
class MaxSensitivity:
    """Result of :func:`max_sensitivity`: the maximum and every perturbation's ratio.

    ``value`` and ``ratios`` are relative Frobenius changes; ``rank_value`` and
    ``rank_changes`` the rank distances 1 - Spearman (None unless asked for).
    """

    value: float
    ratios: np.ndarray
    radius: float
    rank_value: float | None = None
    rank_changes: np.ndarray | None = None


Explanation = torch.Tensor | dict[str, torch.Tensor]


def _explanations(e: object, what: str) -> dict[str, torch.Tensor]:
    items = e.items() if isinstance(e, dict) else [("", e)]
    out = {}
    for key, value in items:
        if (
            not isinstance(value, torch.Tensor)
            or not value.is_floating_point()
        ):
            raise TypeError(
                f"explain must return a float tensor or a dict of them; got {type(value).__name__} for {what}"
            )
        out[key] = value.detach().double().cpu()
    if not out:
        raise ValueError(f"explain returned an empty dict for {what}")
    return out


def max_sensitivity(
    explain: Callable[[torch.Tensor], Explanation],
    x: torch.Tensor,
    *,
    radius: float = 0.02,
    n_perturbations: int = 8,
    generator: torch.Generator | int | None = 0,
    reference: Explanation | None = None,
    rank: bool = False,
) -> MaxSensitivity | dict[str, MaxSensitivity]:
    """Max-sensitivity of an explanation (Yeh et al., 2019), relative to the map's size.

    Estimates max over ||delta||_inf <= radius of ||E(x + delta) - E(x)|| / ||E(x)||
    (Frobenius norms) by drawing ``n_perturbations`` deltas uniformly from the
    L-infinity ball, with ``generator`` (a seed gives the same deltas, so methods
    can be compared on identical perturbations). Perturbed inputs are not clipped
    to [0, 1], so every delta stays exactly within the radius. ``explain`` maps
    an input to its explanation, or to a dict of named explanations that then
    share the perturbations (and the cost of computing them); the result is then
    a dict too. Fix the target class inside ``explain``, and for a randomised
    method such as SmoothGrad its seed, or the estimate measures the method's own
    sampling noise as well. ``reference`` is E(x) if already computed. Neither
    ``x`` nor ``reference`` is modified. Chapter 05, Sanity Checks.
    """
    if not callable(explain):
        raise TypeError(
            f"explain must be a callable mapping an input tensor to its explanation; got {type(explain).__name__}"
        )
    check_input(x)
    radius = check_number(radius, "radius", minimum=0.0, strict=True)
    n_perturbations = check_positive_int(n_perturbations, "n_perturbations")
    gen = as_generator(generator)
    clean = x.detach().clone()
    raw = explain(clean.clone()) if reference is None else reference
    base = _explanations(raw, "x")
    norms = {}
    for key, value in base.items():
        norms[key] = float(value.norm())
        if not math.isfinite(norms[key]) or norms[key] == 0:
            name = f" {key!r}" if key else ""
            raise ValueError(
                f"the explanation{name} of x is zero (or not finite); a relative sensitivity is undefined"
            )
    ratios: dict[str, list[float]] = {key: [] for key in base}
    ranks: dict[str, list[float]] = {key: [] for key in base}
    for _ in range(n_perturbations):
        delta = (
            torch.rand(clean.shape, generator=gen, dtype=torch.float32) * 2 - 1
        ) * radius
        got = _explanations(
            explain(clean + delta.to(device=clean.device, dtype=clean.dtype)),
            "a perturbed input",
        )
        if got.keys() != base.keys():
            raise ValueError(
                f"explain returned keys {sorted(got)} for a perturbed input, {sorted(base)} for x"
            )
        for key, value in got.items():
            if value.shape != base[key].shape:
                raise ValueError(
                    f"explain returned shape {tuple(value.shape)} for a perturbed input, "
                    f"{tuple(base[key].shape)} for x"
                )
            ratios[key].append(float((value - base[key]).norm()) / norms[key])
            if rank:
                ranks[key].append(
                    1.0 - rank_correlation(value.numpy(), base[key].numpy())
                )
    results = {
        key: MaxSensitivity(
            value=float(max(r)),
            ratios=np.asarray(r),
            radius=radius,
            rank_value=float(max(ranks[key])) if rank else None,
            rank_changes=np.asarray(ranks[key]) if rank else None,
        )
        for key, r in ratios.items()
    }
    return results if isinstance(raw, dict) else results[""]
