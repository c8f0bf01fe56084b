"""Does an attribution find the known answer? Localisation scores (chapter 06, Beyond Images).

Where the data are built so that the right explanation is known, e.g. the
planted windows of :func:`gradsal.toydata.planted_window_series` or the
informative columns of :func:`gradsal.toydata.tabular_rule_data`, an
attribution can be scored against it: :func:`top_k_hits` (precision at k of the
ranking), :func:`mass_inside` (share of |attribution| inside the answer) and
:func:`pointing_game` (is the top position inside?), as in time-series
benchmarks of saliency methods (Ismail et al., 2020). :func:`window_mask` builds
the answer of a planted window, and :func:`aligned_profile` lines attributions
up on it. Inputs are (B, T) rows; a (T,) mask is shared by all rows.
"""

from __future__ import annotations

import torch

__all__ = [
    "aligned_profile",
    "mass_inside",
    "pointing_game",
    "top_k_hits",
    "window_mask",
]


def window_mask(start: torch.Tensor, width: int, length: int) -> torch.Tensor:
    """Boolean (B, T) mask that is True on ``start[b] <= t < start[b] + width``.

    The ground truth of chapter 06's localisation scores (chapter 06, Beyond
    Images): the time steps where the pattern that decides the label was planted.
    """
    start = torch.as_tensor(start).long().reshape(-1, 1)
    t = torch.arange(length).reshape(1, -1)
    return (t >= start) & (t < start + width)


def _check_pair(
    attr: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    attr = torch.as_tensor(attr).detach().float()
    mask = torch.as_tensor(mask).bool()
    if mask.ndim == 1:
        mask = mask.expand_as(attr)
    if attr.shape != mask.shape or attr.ndim != 2:
        raise ValueError(
            f"attr and mask must both have shape (B, T); got {tuple(attr.shape)} and {tuple(mask.shape)}"
        )
    return attr, mask


def top_k_hits(
    attr: torch.Tensor, mask: torch.Tensor, k: int | None = None
) -> torch.Tensor:
    """Per example, the fraction of the k highest-scoring positions that lie inside ``mask``.

    ``attr`` and ``mask`` have shape (B, T) (a (T,) mask is shared by all rows);
    ``k`` defaults to the number of True entries of each row's mask, which makes
    the score the precision at k of the ranking. An attribution drawn at random
    scores ``k_true / T`` on average. Ties are broken by position. Chapter 06,
    Beyond Images.
    """
    attr, mask = _check_pair(attr, mask)
    ks = mask.sum(1) if k is None else torch.full((attr.shape[0],), int(k))
    if (ks < 1).any() or (ks > attr.shape[1]).any():
        raise ValueError("k must be between 1 and the number of positions")
    order = attr.argsort(dim=1, descending=True, stable=True)
    inside = mask.gather(1, order).float()
    rank = torch.arange(attr.shape[1]).reshape(1, -1)
    return ((rank < ks.reshape(-1, 1)).float() * inside).sum(1) / ks.float()


def mass_inside(attr: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per example, the share of the total |attribution| that falls inside ``mask``.

    Compare with the mask's share of the positions, which a flat attribution
    would score. A row whose attribution is all zero scores 0. Chapter 06,
    Beyond Images.
    """
    attr, mask = _check_pair(attr, mask)
    a = attr.abs()
    total = a.sum(1)
    return torch.where(
        total > 0,
        (a * mask).sum(1) / total.clamp_min(1e-30),
        torch.zeros_like(total),
    )


def pointing_game(attr: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per example, 1.0 if the single highest-scoring position lies inside ``mask``, else 0.0 (chapter 06, Beyond Images)."""
    return top_k_hits(attr, mask, k=1)


def aligned_profile(
    attr: torch.Tensor, start: torch.Tensor, before: int, after: int
) -> torch.Tensor:
    """Mean attribution at offsets ``-before .. after - 1`` from each example's window start.

    Lines the (B, T) attributions up on their planted windows and averages over
    the examples that have a value at each offset (windows near the ends of a
    series contribute to fewer offsets). Returns a tensor of length
    ``before + after``; entry ``before + d`` is the mean at offset d. Chapter 06,
    Beyond Images.
    """
    attr = torch.as_tensor(attr).detach().float()
    start = torch.as_tensor(start).long().reshape(-1, 1)
    if attr.ndim != 2 or start.shape[0] != attr.shape[0]:
        raise ValueError(
            f"attr must be (B, T) with one start per row; got {tuple(attr.shape)} and {start.shape[0]} starts"
        )
    offsets = torch.arange(-before, after).reshape(1, -1)
    pos = start + offsets
    valid = (pos >= 0) & (pos < attr.shape[1])
    values = attr.gather(1, pos.clamp(0, attr.shape[1] - 1)) * valid
    return values.sum(0) / valid.sum(0).clamp_min(1)
