"""How alike two saliency maps are (chapter 01, The Vanilla Gradient; chapter 05, Sanity Checks).

Every rank correlation here is :func:`gradsal.maps.rank_correlation`, the
package's one Spearman correlation. :func:`spearman` (optionally of |a| and
|b|) and :func:`ssim` compare two (H, W) maps as the randomisation test of
Adebayo et al. (2018) does (chapter 05); :func:`top_overlap` is the overlap of
the brightest pixels and :func:`map_similarity` the four numbers with which
chapter 01 shows how a tiny change of the photo changes the vanilla gradient
map (Simonyan et al., 2014), the fragility that SmoothGrad (Smilkov et al.,
2017) sets out to remove.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..maps import RankedMap, normalize, rank_correlation
from .checks import ArrayLike, as_map, check_fraction, map_values

__all__ = [
    "hog_similarity",
    "map_similarity",
    "spearman",
    "ssim",
    "top_overlap",
]


def spearman(
    a: ArrayLike | RankedMap,
    b: ArrayLike | RankedMap,
    *,
    absolute: bool = False,
) -> float:
    """Spearman rank correlation between two (H, W) maps of one shape, optionally of |a| and |b|.

    With ``absolute=True`` both maps lose their sign first, so a map and its
    negative correlate perfectly: the comparison Adebayo et al. (2018) make for
    absolute-value visualisations. A constant map has no ranking and raises.
    Either map may be a :class:`gradsal.maps.RankedMap` of an (H, W) map, ranked
    once for many comparisons (then ``absolute`` must be False: rank the
    absolute values). Chapter 05, Sanity Checks.
    """

    def values(m: ArrayLike | RankedMap, name: str) -> np.ndarray | RankedMap:
        if not isinstance(m, RankedMap):
            m_np = as_map(m, name)
            return np.abs(m_np) if absolute else m_np
        if absolute:
            raise ValueError(
                f"{name} is a RankedMap, ranked already; with absolute=True "
                "rank the absolute values instead"
            )
        return m

    return rank_correlation(values(a, "a"), values(b, "b"))


def ssim(a: ArrayLike, b: ArrayLike, *, win_size: int = 7) -> float:
    """Structural similarity (SSIM) of two (H, W) maps after min-max scaling each to [0, 1].

    Scaling first makes the score independent of each map's units, as in the
    sanity-check literature (Adebayo et al., 2018); SSIM itself is
    :func:`skimage.metrics.structural_similarity` with ``data_range=1``.
    Identical maps score 1. Chapter 05, Sanity Checks.
    """
    from skimage.metrics import structural_similarity

    a_np = as_map(a, "a")
    b_np = as_map(b, "b")
    if a_np.shape != b_np.shape:
        raise ValueError(
            f"maps must have the same shape; got {a_np.shape} and {b_np.shape}"
        )
    if min(a_np.shape) < win_size:
        raise ValueError(
            f"maps of shape {a_np.shape} are smaller than the SSIM window ({win_size})"
        )
    a01 = normalize(torch.from_numpy(a_np)).numpy()
    b01 = normalize(torch.from_numpy(b_np)).numpy()
    return float(
        structural_similarity(a01, b01, data_range=1.0, win_size=win_size)
    )


def hog_similarity(
    a: ArrayLike, b: ArrayLike, *, pixels_per_cell: int = 16
) -> float:
    """Pearson correlation of the HOG features of two (H, W) maps, each min-max scaled to [0, 1].

    Histograms of oriented gradients (Dalal and Triggs, 2005;
    :func:`skimage.feature.hog` with 9 orientations, ``pixels_per_cell`` square
    cells and 2 x 2 blocks) describe a map's local edge structure whatever its
    exact values, the fourth similarity of Adebayo et al. (2018): two maps that
    outline the same shapes correlate highly even where their pixel ranks
    differ. Chapter 07, The Wider Family.
    """
    from skimage.feature import hog

    a_np, b_np = as_map(a, "a"), as_map(b, "b")
    if a_np.shape != b_np.shape:
        raise ValueError(
            f"maps must have the same shape; got {a_np.shape} and {b_np.shape}"
        )
    if min(a_np.shape) < 2 * pixels_per_cell:
        raise ValueError(
            f"maps of shape {a_np.shape} are smaller than a HOG block of 2 x {pixels_per_cell} pixels"
        )
    cell = (int(pixels_per_cell), int(pixels_per_cell))
    fa, fb = (
        hog(
            normalize(torch.from_numpy(m)).numpy(),
            orientations=9,
            pixels_per_cell=cell,
            cells_per_block=(2, 2),
        )
        for m in (a_np, b_np)
    )
    if np.ptp(fa) == 0 or np.ptp(fb) == 0:
        raise ValueError("a constant map has no HOG features to correlate")
    return float(np.corrcoef(fa, fb)[0, 1])


def _flat_pair(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    va = map_values(a, name="a", nonnegative=False)
    vb = map_values(b, name="b", nonnegative=False)
    if va.shape != vb.shape:
        raise ValueError(
            f"maps must have the same number of values; got {va.size} and {vb.size}"
        )
    return va, vb


def top_overlap(a: ArrayLike, b: ArrayLike, fraction: float = 0.05) -> float:
    """Jaccard overlap (intersection over union) of the brightest ``fraction`` of pixels of two maps.

    Each map's top ``k = ceil(fraction * n)`` pixels are selected (ties broken by
    position); the result is 1 when both maps select the same pixels and 0 when
    they share none. Chapter 01, The Vanilla Gradient.
    """
    check_fraction(fraction)
    va, vb = _flat_pair(a, b)
    k = max(1, math.ceil(fraction * va.size))
    top_a = set(np.argsort(-va, kind="stable")[:k].tolist())
    top_b = set(np.argsort(-vb, kind="stable")[:k].tolist())
    return len(top_a & top_b) / len(top_a | top_b)


def map_similarity(
    a: ArrayLike, b: ArrayLike, fraction: float = 0.05
) -> dict[str, float]:
    """How alike two maps of the same shape are, in four numbers.

    ``spearman``: rank correlation of the pixels (:func:`gradsal.rank_correlation`);
    ``pearson``: linear correlation; ``mean abs diff``: mean |a' - b'| after
    min-max scaling each map to [0, 1] on its own (0 for maps equal up to scale,
    at most 1); ``top overlap``: :func:`top_overlap` at ``fraction``. Chapter 01,
    The Vanilla Gradient, uses it to show how a tiny change of the photo changes
    the vanilla gradient map. (The randomisation test's three numbers are
    :func:`gradsal.metrics.randomization_similarity`.)
    """
    va, vb = _flat_pair(a, b)
    if va.size < 2 or np.ptp(va) == 0 or np.ptp(vb) == 0:
        raise ValueError(
            "maps need at least two distinct values each to be compared"
        )
    na = (va - va.min()) / np.ptp(va)
    nb = (vb - vb.min()) / np.ptp(vb)
    return {
        "spearman": rank_correlation(va, vb),
        "pearson": float(np.corrcoef(va, vb)[0, 1]),
        "mean abs diff": float(np.mean(np.abs(na - nb))),
        "top overlap": top_overlap(va, vb, fraction),
    }
