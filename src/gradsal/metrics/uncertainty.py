"""Uncertainty of a comparison over a few photos and noise seeds (chapter 07, The Wider Family).

Every score of a saliency method in the book is measured on a handful of photos
(seven) and, for a stochastic method, on a few noise seeds per photo. The
question a reader asks of "method A scores 0.31, method B 0.24" is whether the
difference would survive other photos and other seeds. :func:`bootstrap_interval`
gives a percentile bootstrap interval for the mean (Efron and Tibshirani, 1993),
resampling photos and, within each resampled photo, seeds (the two-stage
bootstrap for nested data); :func:`paired_difference` does the same for the
per-photo differences of two methods measured on the same photos and seeds,
which is far more precise than comparing two separate intervals.

With seven photos the interval is coarse, and a percentile bootstrap of a mean
of seven values is known to be somewhat too narrow (its coverage is below the
nominal level for n this small): read the intervals as a lower bound on the
uncertainty, and an interval that excludes zero as evidence, not proof.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core import check_positive_int, to_numpy

__all__ = ["Interval", "bootstrap_interval", "paired_difference"]


@dataclass(frozen=True)
class Interval:
    """A mean and its bootstrap interval: ``estimate`` in ``[low, high]`` at ``level``."""

    estimate: float
    low: float
    high: float
    level: float
    n_photos: int
    n_seeds: int

    def excludes(self, value: float = 0.0) -> bool:
        """Whether ``value`` lies outside the interval."""
        return not self.low <= value <= self.high

    def __str__(self) -> str:
        return f"{self.estimate:.2f} [{self.low:.2f}, {self.high:.2f}]"


def _as_table(values: object) -> np.ndarray:
    arr = to_numpy(values, "values")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] < 2 or arr.shape[1] < 1:
        raise ValueError(
            "values must be (photos,) or (photos, seeds) with at least two photos; "
            f"got shape {tuple(arr.shape)}"
        )
    if not np.isfinite(arr).all():
        raise ValueError("values contain NaN or infinite numbers")
    return arr


def bootstrap_interval(
    values: object, *, level: float = 0.95, n_boot: int = 4000, seed: int = 0
) -> Interval:
    """Mean over photos (and seeds) with a two-stage percentile bootstrap interval.

    ``values`` is (P,) one score per photo, or (P, S) one per photo and noise
    seed. Each bootstrap replicate draws P photos with replacement and, for each
    drawn photo, S of its seeds with replacement, and takes the mean; the
    interval holds the central ``level`` of ``n_boot`` replicates, drawn with
    ``numpy.random.default_rng(seed)``. Chapter 07, The Wider Family.
    """
    table = _as_table(values)
    n_boot = check_positive_int(n_boot, "n_boot")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level!r}")
    rng = np.random.default_rng(seed)
    p, s = table.shape
    photos = rng.integers(0, p, size=(n_boot, p))
    seeds = rng.integers(0, s, size=(n_boot, p, s))
    replicates = table[photos[..., None], seeds].mean(axis=(1, 2))
    tail = (1 - level) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    return Interval(
        float(table.mean()), float(low), float(high), float(level), p, s
    )


def paired_difference(
    a: object,
    b: object,
    *,
    level: float = 0.95,
    n_boot: int = 4000,
    seed: int = 0,
) -> Interval:
    """Mean of ``a - b`` over the same photos (and seeds), with its bootstrap interval.

    ``a`` and ``b`` are the scores of two methods on the same photos, (P,) or
    (P, S); a method measured without seeds may be (P,) against the other's
    (P, S) and is then broadcast. Chapter 07, The Wider Family.
    """
    ta, tb = _as_table(a), _as_table(b)
    if ta.shape[0] != tb.shape[0]:
        raise ValueError(
            f"a and b must score the same photos; got {ta.shape[0]} and {tb.shape[0]}"
        )
    if ta.shape[1] != tb.shape[1] and 1 not in (ta.shape[1], tb.shape[1]):
        raise ValueError(
            f"a and b must have the same seeds (or one none); got {ta.shape[1]} and {tb.shape[1]}"
        )
    return bootstrap_interval(ta - tb, level=level, n_boot=n_boot, seed=seed)
