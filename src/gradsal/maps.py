"""From a (C, H, W) gradient to a displayable (H, W) saliency map (chapter 01, The Vanilla Gradient).

Channel reductions collapse the colour channels k in {R, G, B} (not the classes),
normalisation maps to [0, 1] for display, and :func:`rank_correlation` is the
package's one Spearman correlation, which every comparison of maps uses
(Adebayo et al., 2018 compare maps the same way).
"""

from __future__ import annotations

import numpy as np
import torch

from .core import to_numpy

__all__ = [
    "REDUCTIONS",
    "RankedMap",
    "average_ranks",
    "normalize",
    "rank_correlation",
    "reduce_channels",
]

REDUCTIONS = ("max", "mean", "l2", "sum", "positive", "square")


def reduce_channels(g: torch.Tensor, how: str = "max") -> torch.Tensor:
    """Collapse the channel axis of a gradient: (..., C, H, W) -> (..., H, W).

    ``how``: ``"max"`` max_k |g_k|; ``"mean"`` mean_k |g_k|; ``"l2"``
    sqrt(sum_k g_k^2); ``"sum"`` sum_k |g_k|; ``"positive"`` max_k max(g_k, 0),
    which keeps only pixels whose increase raises the logit; ``"square"`` max_k g_k^2.
    The channel axis is the third from the end. See chapter 01, The Vanilla Gradient.
    """
    if not isinstance(g, torch.Tensor) or not g.is_floating_point():
        raise TypeError(
            "g must be a floating-point tensor of shape (..., C, H, W)"
        )
    if g.ndim < 3:
        raise ValueError(
            f"g must have shape (..., C, H, W) with at least 3 axes; got {tuple(g.shape)}"
        )
    if g.numel() == 0:
        raise ValueError(f"g is empty (shape {tuple(g.shape)})")
    if how == "max":
        return g.abs().amax(dim=-3)
    if how == "mean":
        return g.abs().mean(dim=-3)
    if how == "l2":
        return g.square().sum(dim=-3).sqrt()
    if how == "sum":
        return g.abs().sum(dim=-3)
    if how == "positive":
        return g.clamp_min(0).amax(dim=-3)
    if how == "square":
        return g.square().amax(dim=-3)
    raise ValueError(f"how must be one of {REDUCTIONS}; got {how!r}")


def normalize(
    s: torch.Tensor,
    *,
    dim: int | tuple[int, ...] | None = None,
    clip_percentile: float | None = None,
) -> torch.Tensor:
    """Min-max scale a map to [0, 1]; a constant map becomes zeros, never NaN.

    ``dim=None`` scales the whole tensor with one min and max (maps compared on
    one colour scale); ``dim=(-2, -1)`` scales each (H, W) map of a batch on its
    own. ``clip_percentile`` (e.g. 99) first clips values above that percentile,
    as PAIR's visualisation does, so a few extreme pixels do not darken the rest.
    The input is not modified. See chapter 01, The Vanilla Gradient.
    """
    if not isinstance(s, torch.Tensor) or not s.is_floating_point():
        raise TypeError("s must be a floating-point tensor")
    if s.numel() == 0:
        raise ValueError("s is empty; expected a map with at least one value")
    if not torch.isfinite(s).all():
        raise ValueError("s contains NaN or infinite values")
    dims = (
        tuple(range(s.ndim))
        if dim is None
        else ((dim,) if isinstance(dim, int) else tuple(dim))
    )
    s = s.detach()
    if clip_percentile is not None:
        if not 0 < clip_percentile <= 100:
            raise ValueError(
                f"clip_percentile must be in (0, 100]; got {clip_percentile}"
            )
        upper = np.percentile(
            to_numpy(s), clip_percentile, axis=dims, keepdims=True
        )
        s = torch.minimum(
            s, torch.as_tensor(upper, dtype=s.dtype, device=s.device)
        )
    lo = s.amin(dim=dims, keepdim=True)
    hi = s.amax(dim=dims, keepdim=True)
    span = hi - lo
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (s - lo) / safe, torch.zeros_like(s))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties given the mean of the ranks they span.

    The ranking of :func:`scipy.stats.rankdata` (``method="average"``), with
    one sort and no further passes, since every comparison of maps ranks
    50,176 pixels (chapter 05, Sanity Checks).
    """
    v = np.asarray(values).ravel()
    order = np.argsort(v)  # any order within a tie: its ranks are averaged
    sorted_v = v[order]
    new_value = np.empty(v.size, dtype=bool)
    new_value[:1] = True
    np.not_equal(sorted_v[1:], sorted_v[:-1], out=new_value[1:])
    starts = np.flatnonzero(new_value)  # first sorted position of each value
    ends = np.append(starts[1:], v.size)  # one past its last
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(v.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


class RankedMap:
    """A map's average ranks, computed once to be rank-correlated with many maps.

    ``rank_correlation(RankedMap(m), other)`` equals ``rank_correlation(m,
    other)``; ranking the pixels is nearly all of its cost, so a map compared
    with dozens of others (a trained model's map against each randomised
    model's, chapter 07, The Wider Family) is ranked once. ``values`` is never
    modified; a constant map raises, as in :func:`rank_correlation`.
    """

    __slots__ = ("centred", "norm", "shape")

    def __init__(
        self, values: torch.Tensor | np.ndarray, name: str = "map"
    ) -> None:
        v = (
            values
            if isinstance(values, np.ndarray)
            else to_numpy(values, name)
        )
        if v.size < 2:
            raise ValueError(
                "maps need at least two values to be rank-correlated"
            )
        if np.ptp(v) == 0:
            raise ValueError(
                "a constant map has no ranking; rank correlation is undefined"
            )
        ranks = average_ranks(v)
        ranks -= ranks.mean()
        self.shape: tuple[int, ...] = v.shape
        self.centred: np.ndarray = ranks
        self.norm: float = float(np.sqrt(ranks @ ranks))


def rank_correlation(
    a: torch.Tensor | np.ndarray | RankedMap,
    b: torch.Tensor | np.ndarray | RankedMap,
) -> float:
    """Spearman rank correlation between two maps of the same shape.

    Ties get their average rank. It compares the ordering of pixels only, so it
    is unchanged by any increasing rescaling of either map (chapter 01, The
    Vanilla Gradient; chapter 05, Sanity Checks; Spearman, 1904). The value is
    Pearson's correlation of the :func:`average_ranks`, as in
    :func:`scipy.stats.spearmanr`. Either map may be a :class:`RankedMap`,
    ranked already.
    """
    a_v = a if isinstance(a, RankedMap) else to_numpy(a, "a")
    b_v = b if isinstance(b, RankedMap) else to_numpy(b, "b")
    if a_v.shape != b_v.shape:
        raise ValueError(
            f"maps must have the same shape; got {a_v.shape} and {b_v.shape}"
        )
    ra = a_v if isinstance(a_v, RankedMap) else RankedMap(a_v)
    rb = b_v if isinstance(b_v, RankedMap) else RankedMap(b_v)
    rho = float(ra.centred @ rb.centred / (ra.norm * rb.norm))
    return max(-1.0, min(1.0, rho))
