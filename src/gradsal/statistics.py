"""Summary numbers for saliency maps and for comparing two maps (chapter 01).

A saliency map is a non-negative array, usually (H, W). The functions here reduce
it to a few numbers that say how concentrated it is: the share of near-zero pixels
(:func:`sparsity`), the peak against the average (:func:`max_mean_ratio`), the share
of the total held by the brightest pixels (:func:`top_mass`), the Gini coefficient
(:func:`gini`) and percentiles. :func:`map_similarity` compares two maps (rank and
linear correlation, mean absolute difference, overlap of the brightest pixels), as
the fragility experiment of chapter 01-VanillaGradient does. Every function treats
its input as a flat collection of values and accepts torch tensors or NumPy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "gini",
    "map_similarity",
    "map_statistics",
    "max_mean_ratio",
    "percentiles",
    "sparsity",
    "top_mass",
    "top_overlap",
]

ArrayLike = torch.Tensor | np.ndarray


def _values(s: ArrayLike, *, name: str = "s", nonnegative: bool = True) -> np.ndarray:
    """Flatten a map to a float64 vector after checking it is finite, non-empty and (optionally) >= 0."""
    if isinstance(s, torch.Tensor):
        arr = s.detach().cpu().double().numpy()
    else:
        arr = np.asarray(s, dtype=float)
    arr = arr.ravel()
    if arr.size == 0:
        raise ValueError(f"{name} is empty; expected a map with at least one value")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if nonnegative and (arr < 0).any():
        raise ValueError(
            f"{name} has negative values; expected a magnitude map (reduce the gradient with "
            "reduce_channels, e.g. how='max', first)"
        )
    return arr


def _positive_total(arr: np.ndarray, what: str) -> float:
    total = float(arr.sum())
    if total <= 0:
        raise ValueError(f"{what} is undefined for an all-zero map")
    return total


def sparsity(s: ArrayLike, threshold: float = 0.1) -> float:
    """Fraction of pixels below ``threshold`` times the map's maximum.

    0 for a constant map; ``(n - 1) / n`` for a map with a single non-zero pixel
    out of ``n``. A high value means most pixels are dark once the map is scaled
    to its peak. See chapter 01-VanillaGradient.
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a fraction of the maximum in [0, 1]; got {threshold}")
    arr = _values(s)
    peak = float(arr.max())
    if peak == 0:
        return 0.0
    return float(np.mean(arr < threshold * peak))


def max_mean_ratio(s: ArrayLike) -> float:
    """The map's maximum divided by its mean.

    1 for a constant map, ``n`` for a single non-zero pixel among ``n``; large
    values say the peak stands far above a typical pixel (a few extreme pixels
    can also cause that, so read it with the percentiles). See chapter
    01-VanillaGradient.
    """
    arr = _values(s)
    total = _positive_total(arr, "the max/mean ratio")
    return float(arr.max() / (total / arr.size))


def top_mass(s: ArrayLike, fraction: float = 0.05) -> float:
    """Share of the map's total held by its brightest ``fraction`` of pixels.

    The top ``k = ceil(fraction * n)`` values are summed and divided by the sum
    of all values: ``k / n`` for a constant map, 1 for a single non-zero pixel.
    See chapter 01-VanillaGradient.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction}")
    arr = _values(s)
    total = _positive_total(arr, "the top mass")
    k = max(1, math.ceil(fraction * arr.size))
    return float(np.sort(arr)[-k:].sum() / total)


def gini(s: ArrayLike) -> float:
    """Gini coefficient of the map's values, in ``[0, (n - 1) / n]``.

    With the values sorted ascending, ``G = sum_i (2 i - n - 1) s_(i) / (n sum_i s_i)``:
    0 when every pixel has the same value, ``(n - 1) / n`` when one pixel holds
    everything, ``(n - 1) / (3 n)`` for the values 1, 2, ..., n. It summarises the
    whole Lorenz curve in one number. See chapter 01-VanillaGradient.
    """
    arr = np.sort(_values(s))
    total = _positive_total(arr, "the Gini coefficient")
    n = arr.size
    ranks = np.arange(1, n + 1)
    return float(np.sum((2 * ranks - n - 1) * arr) / (n * total))


def percentiles(s: ArrayLike, q: Sequence[float] = (50, 90, 99)) -> dict[str, float]:
    """Percentiles of the map's values as ``{"p50": ..., "p90": ...}`` (linear interpolation).

    Read them relative to the maximum: a p99 close to the maximum means the
    bright region is more than a handful of pixels. See chapter 01-VanillaGradient.
    """
    arr = _values(s, nonnegative=False)
    qs = [float(v) for v in q]
    if any(not 0 <= v <= 100 for v in qs):
        raise ValueError(f"percentiles must lie in [0, 100]; got {list(q)}")
    values = np.percentile(arr, qs)
    return {f"p{v:g}": float(x) for v, x in zip(qs, values)}


def map_statistics(
    s: ArrayLike, *, threshold: float = 0.1, fraction: float = 0.05, q: Sequence[float] = (50, 90, 99)
) -> dict[str, float]:
    """All the summaries of one magnitude map in one dictionary (one row of a table).

    Keys: ``sparsity`` (:func:`sparsity` at ``threshold``), ``max/mean``
    (:func:`max_mean_ratio`), ``top mass`` (:func:`top_mass` at ``fraction``),
    ``gini`` (:func:`gini`) and the percentiles of :func:`percentiles` divided
    by the maximum (``p50/max`` ...), so that maps of different overall size
    compare. See chapter 01-VanillaGradient.
    """
    arr = _values(s)
    peak = float(arr.max())
    _positive_total(arr, "map statistics")
    out = {
        "sparsity": sparsity(arr, threshold),
        "max/mean": max_mean_ratio(arr),
        "top mass": top_mass(arr, fraction),
        "gini": gini(arr),
    }
    for key, value in percentiles(arr, q).items():
        out[f"{key}/max"] = value / peak
    return out


def top_overlap(a: ArrayLike, b: ArrayLike, fraction: float = 0.05) -> float:
    """Jaccard overlap (intersection over union) of the brightest ``fraction`` of pixels of two maps.

    Each map's top ``k = ceil(fraction * n)`` pixels are selected (ties broken by
    position); the result is 1 when both maps select the same pixels and 0 when
    they share none. See chapter 01-VanillaGradient.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction}")
    va = _values(a, name="a", nonnegative=False)
    vb = _values(b, name="b", nonnegative=False)
    if va.shape != vb.shape:
        raise ValueError(f"maps must have the same number of values; got {va.size} and {vb.size}")
    k = max(1, math.ceil(fraction * va.size))
    top_a = set(np.argsort(-va, kind="stable")[:k].tolist())
    top_b = set(np.argsort(-vb, kind="stable")[:k].tolist())
    return len(top_a & top_b) / len(top_a | top_b)


def map_similarity(a: ArrayLike, b: ArrayLike, fraction: float = 0.05) -> dict[str, float]:
    """How alike two maps of the same shape are, in four numbers.

    ``spearman``: rank correlation of the pixels; ``pearson``: linear
    correlation; ``mean abs diff``: mean |a' - b'| after min-max scaling each map
    to [0, 1] on its own (0 for maps equal up to scale, at most 1);
    ``top overlap``: :func:`top_overlap` at ``fraction``. Chapter
    01-VanillaGradient uses it to show how a tiny change of the photo changes
    the vanilla gradient map.
    """
    from scipy.stats import spearmanr

    va = _values(a, name="a", nonnegative=False)
    vb = _values(b, name="b", nonnegative=False)
    if va.shape != vb.shape:
        raise ValueError(f"maps must have the same number of values; got {va.size} and {vb.size}")
    if va.size < 2 or np.ptp(va) == 0 or np.ptp(vb) == 0:
        raise ValueError("maps need at least two distinct values each to be compared")
    na = (va - va.min()) / np.ptp(va)
    nb = (vb - vb.min()) / np.ptp(vb)
    return {
        "spearman": float(spearmanr(va, vb).statistic),
        "pearson": float(np.corrcoef(va, vb)[0, 1]),
        "mean abs diff": float(np.mean(np.abs(na - nb))),
        "top overlap": top_overlap(va, vb, fraction),
    }
