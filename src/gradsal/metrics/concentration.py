"""How concentrated a saliency map is, in a few numbers (chapter 01, The Vanilla Gradient).

A saliency map is a non-negative array, usually (H, W). The summaries here say
how concentrated it is: the share of near-zero pixels (:func:`sparsity`), the
peak against the average (:func:`max_mean_ratio`), the share of the total held
by the brightest pixels (:func:`top_mass`), the Gini coefficient (:func:`gini`,
the whole Lorenz curve in one number) and percentiles; :func:`map_statistics`
gives them all as one row of chapter 01's table of the vanilla gradient's
concentration, the noisy look that SmoothGrad (Smilkov et al., 2017) sets out to
remove. Every function treats its input as a flat collection of values and
accepts torch tensors or NumPy arrays. Comparing two maps is
:mod:`gradsal.metrics.similarity`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .checks import ArrayLike, as_map, check_fraction, map_values

__all__ = [
    "gini",
    "map_statistics",
    "max_mean_ratio",
    "neighbour_correlation",
    "percentiles",
    "sparsity",
    "top_mass",
]


def _positive_total(arr: np.ndarray, what: str) -> float:
    total = float(arr.sum())
    if total <= 0:
        raise ValueError(f"{what} is undefined for an all-zero map")
    return total


def neighbour_correlation(
    s: ArrayLike, other: ArrayLike | None = None
) -> float:
    """How smooth an (H, W) map is: its correlation with itself shifted by one pixel.

    The mean of the Pearson correlations between the map and its copy shifted
    one pixel right, and one pixel down: near 0 for speckle (independent
    pixels), near 1 for a map that varies slowly, 1 - O(1/size^2) for a
    bilinear upsampling of a coarse grid. Chapter 01, The Vanilla Gradient;
    chapter 02, SmoothGrad; chapter 07, The Wider Family (the resolution of
    Grad-CAM).

    With ``other``, a second estimate of the same map whose error is
    independent of the first (for SmoothGrad: the map of other noise draws),
    every covariance is taken between the two maps, ``cov(s_p, other_q)``
    averaged with ``cov(other_p, s_q)``, for the shifted pairs (p, q) and,
    in the denominator, for p = q. Independent errors drop out of these
    cross-covariances in expectation, so the result estimates the neighbour
    correlation of the maps' common expectation, free of the Monte Carlo
    speckle that lowers the one-map value (chapter 02, SmoothGrad). With
    ``other`` equal to ``s`` it is the one-map value.
    """

    arr = as_map(s, "s")
    if min(arr.shape) < 2:
        raise ValueError(
            f"a map needs at least 2 x 2 pixels; got shape {arr.shape}"
        )
    two = arr if other is None else as_map(other, "other")
    if two.shape != arr.shape:
        raise ValueError(
            f"other must have the shape of s, {arr.shape}; got {two.shape}"
        )
    shifts = [
        ((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
        ((slice(1, None), slice(None)), (slice(None, -1), slice(None))),
    ]
    if any(
        np.ptp(m[p]) == 0 for m in (arr, two) for pair in shifts for p in pair
    ):
        raise ValueError("a constant map has no neighbour correlation")

    def cov(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a.ravel(), b.ravel()
        return float(np.mean((a - a.mean()) * (b - b.mean())))

    values = []
    for p, q in shifts:
        across = 0.5 * (cov(arr[p], two[q]) + cov(two[p], arr[q]))
        var_p, var_q = cov(arr[p], two[p]), cov(arr[q], two[q])
        if var_p <= 0 or var_q <= 0:
            raise ValueError(
                "the two maps are not positively correlated; they do not "
                "estimate the same map"
            )
        values.append(across / math.sqrt(var_p * var_q))
    return float(np.mean(values))


def sparsity(s: ArrayLike, threshold: float = 0.1) -> float:
    """Fraction of pixels below ``threshold`` times the map's maximum.

    0 for a constant map; ``(n - 1) / n`` for a map with a single non-zero pixel
    out of ``n``. A high value means most pixels are dark once the map is scaled
    to its peak. Chapter 01, The Vanilla Gradient.
    """
    if not 0 <= threshold <= 1:
        raise ValueError(
            f"threshold must be a fraction of the maximum in [0, 1]; got {threshold}"
        )
    arr = map_values(s)
    peak = float(arr.max())
    if peak == 0:
        return 0.0
    return float(np.mean(arr < threshold * peak))


def max_mean_ratio(s: ArrayLike) -> float:
    """The map's maximum divided by its mean.

    1 for a constant map, ``n`` for a single non-zero pixel among ``n``; large
    values say the peak stands far above a typical pixel (a few extreme pixels
    can also cause that, so read it with the percentiles). Chapter 01, The
    Vanilla Gradient.
    """
    arr = map_values(s)
    total = _positive_total(arr, "the max/mean ratio")
    return float(arr.max() / (total / arr.size))


def top_mass(s: ArrayLike, fraction: float = 0.05) -> float:
    """Share of the map's total held by its brightest ``fraction`` of pixels.

    The top ``k = ceil(fraction * n)`` values are summed and divided by the sum
    of all values: ``k / n`` for a constant map, 1 for a single non-zero pixel.
    Chapter 01, The Vanilla Gradient.
    """
    check_fraction(fraction)
    arr = map_values(s)
    total = _positive_total(arr, "the top mass")
    k = max(1, math.ceil(fraction * arr.size))
    return float(np.sort(arr)[-k:].sum() / total)


def gini(s: ArrayLike) -> float:
    """Gini coefficient of the map's values, in ``[0, (n - 1) / n]``.

    With the values sorted ascending, ``G = sum_i (2 i - n - 1) s_(i) / (n sum_i s_i)``:
    0 when every pixel has the same value, ``(n - 1) / n`` when one pixel holds
    everything, ``(n - 1) / (3 n)`` for the values 1, 2, ..., n. It summarises the
    whole Lorenz curve in one number. Chapter 01, The Vanilla Gradient.
    """
    arr = np.sort(map_values(s))
    total = _positive_total(arr, "the Gini coefficient")
    n = arr.size
    ranks = np.arange(1, n + 1)
    return float(np.sum((2 * ranks - n - 1) * arr) / (n * total))


def percentiles(
    s: ArrayLike, q: Sequence[float] = (50, 90, 99)
) -> dict[str, float]:
    """Percentiles of the map's values as ``{"p50": ..., "p90": ...}`` (linear interpolation).

    Read them relative to the maximum: a p99 close to the maximum means the
    bright region is more than a handful of pixels. Chapter 01, The Vanilla Gradient.
    """
    arr = map_values(s, nonnegative=False)
    qs = [float(v) for v in q]
    if any(not 0 <= v <= 100 for v in qs):
        raise ValueError(f"percentiles must lie in [0, 100]; got {list(q)}")
    values = np.percentile(arr, qs)
    return {f"p{v:g}": float(x) for v, x in zip(qs, values)}


def map_statistics(
    s: ArrayLike,
    *,
    threshold: float = 0.1,
    fraction: float = 0.05,
    q: Sequence[float] = (50, 90, 99),
) -> dict[str, float]:
    """All the summaries of one magnitude map in one dictionary (one row of a table).

    Keys: ``sparsity`` (:func:`sparsity` at ``threshold``), ``max/mean``
    (:func:`max_mean_ratio`), ``top mass`` (:func:`top_mass` at ``fraction``),
    ``gini`` (:func:`gini`) and the percentiles of :func:`percentiles` divided
    by the maximum (``p50/max`` ...), so that maps of different overall size
    compare. Chapter 01, The Vanilla Gradient.
    """
    arr = map_values(s)
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
