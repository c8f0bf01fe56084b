"""Figures for the book: image, map and overlay; grids on one colour scale; signed maps.

Magnitudes use a perceptually uniform colour map (magma by default); signed maps
use RdBu_r with limits symmetric about zero, so white means zero, red positive
and blue negative. Every function returns the matplotlib Figure (for myst-nb's
``glue``) or draws into a given Axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from .core import to_numpy

__all__ = [
    "image_map_overlay",
    "map_grid",
    "show_image",
    "show_map",
    "show_overlay",
    "show_signed",
    "signed_figure",
]

ArrayLike = torch.Tensor | np.ndarray


def _image(image: ArrayLike) -> np.ndarray:
    arr = to_numpy(image, "image")
    if (
        arr.ndim == 3
        and arr.shape[0] in (1, 3)
        and arr.shape[-1] not in (1, 3)
    ):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return np.clip(arr, 0, 1)


def _map(s: ArrayLike) -> np.ndarray:
    arr = to_numpy(s, "map")
    if arr.ndim != 2:
        raise ValueError(
            f"a map must have shape (H, W); got {arr.shape} (reduce channels first)"
        )
    return arr


def _clean(ax: Axes, title: str | None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)


def show_image(
    ax: Axes, image: ArrayLike, title: str | None = None
) -> AxesImage:
    """Draw a (3, H, W) or (H, W, 3) image in [0, 1]."""
    im = ax.imshow(
        _image(image),
        cmap="gray" if _image(image).ndim == 2 else None,
        vmin=0,
        vmax=1,
    )
    _clean(ax, title)
    return im


def show_map(
    ax: Axes,
    s: ArrayLike,
    *,
    cmap: str = "magma",
    vmin: float | None = None,
    vmax: float | None = None,
    title: str | None = None,
    colorbar: bool = False,
) -> AxesImage:
    """Draw an (H, W) magnitude map; pass ``vmin``/``vmax`` to share a scale."""
    im = ax.imshow(
        _map(s), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest"
    )
    _clean(ax, title)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    return im


def show_signed(
    ax: Axes,
    s: ArrayLike,
    *,
    limit: float | None = None,
    title: str | None = None,
    colorbar: bool = False,
) -> AxesImage:
    """Draw a signed (H, W) map: red positive, blue negative, white zero.

    The colour limits are symmetric, +-``limit`` (default: the largest |value|),
    so equal colours mean equal magnitudes on both sides.
    """
    arr = _map(s)
    lim = float(np.abs(arr).max()) if limit is None else float(limit)
    lim = lim if lim > 0 else 1.0
    im = ax.imshow(
        arr, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest"
    )
    _clean(ax, title)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    return im


def show_overlay(
    ax: Axes,
    image: ArrayLike,
    s: ArrayLike,
    *,
    cmap: str = "magma",
    alpha: float = 0.6,
    title: str | None = None,
) -> AxesImage:
    """Draw a map over a greyed-out copy of the image, to see where it falls."""
    img = _image(image)
    grey = img.mean(axis=2) if img.ndim == 3 else img
    ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
    arr = _map(s)
    span = arr.max() - arr.min()
    norm = (arr - arr.min()) / span if span > 0 else np.zeros_like(arr)
    im = ax.imshow(
        norm, cmap=cmap, alpha=alpha, vmin=0, vmax=1, interpolation="nearest"
    )
    _clean(ax, title)
    return im


def image_map_overlay(
    image: ArrayLike,
    s: ArrayLike,
    *,
    title: str | None = None,
    cmap: str = "magma",
    map_title: str = "saliency",
) -> Figure:
    """Three panels side by side: the image, the map (with a colour bar), the overlay."""
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.6), layout="constrained")
    show_image(axes[0], image, "image")
    show_map(axes[1], s, cmap=cmap, title=map_title, colorbar=True)
    show_overlay(axes[2], image, s, cmap=cmap, title="overlay")
    if title:
        fig.suptitle(title)
    return fig


def map_grid(
    maps: Sequence[ArrayLike],
    titles: Sequence[str] | None = None,
    *,
    ncols: int | None = None,
    cmap: str = "magma",
    signed: bool = False,
    shared_scale: bool = True,
    image: ArrayLike | None = None,
    panel_size: float = 2.5,
    suptitle: str | None = None,
) -> Figure:
    """A grid of (H, W) maps, by default on one shared colour scale with one colour bar.

    With ``signed=True`` the maps are drawn red/blue with symmetric limits. An
    ``image`` given is drawn first, in colour. When ``shared_scale`` is true the
    caption should say so: equal colours then mean equal values across panels.
    """
    arrays = [_map(s) for s in maps]
    if not arrays:
        raise ValueError("map_grid needs at least one map")
    if titles is not None and len(titles) != len(arrays):
        raise ValueError(f"got {len(titles)} titles for {len(arrays)} maps")
    panels = len(arrays) + (image is not None)
    ncols = ncols or min(panels, 5)
    nrows = -(-panels // ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(
            panel_size * ncols + (0.6 if shared_scale else 0),
            panel_size * nrows + 0.4,
        ),
        layout="constrained",
        squeeze=False,
    )
    flat = list(axes.ravel())
    if image is not None:
        show_image(flat.pop(0), image, "image")
    if signed:
        lim = max(float(np.abs(a).max()) for a in arrays)
        lims = [lim if shared_scale else None] * len(arrays)
    else:
        lo = min(float(a.min()) for a in arrays)
        hi = max(float(a.max()) for a in arrays)
    last = None
    for i, (ax, arr) in enumerate(zip(flat, arrays)):
        t = titles[i] if titles is not None else None
        if signed:
            last = show_signed(
                ax, arr, limit=lims[i], title=t, colorbar=not shared_scale
            )
        elif shared_scale:
            last = show_map(ax, arr, cmap=cmap, vmin=lo, vmax=hi, title=t)
        else:
            last = show_map(ax, arr, cmap=cmap, title=t, colorbar=True)
    for ax in flat[len(arrays) :]:
        ax.axis("off")
    if shared_scale and last is not None:
        fig.colorbar(
            last,
            ax=axes.ravel().tolist(),
            fraction=0.025,
            pad=0.02,
            label="shared scale",
        )
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def signed_figure(
    image: ArrayLike, s: ArrayLike, *, title: str | None = None
) -> Figure:
    """The image beside a signed map (red raises the logit, blue lowers it)."""
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.6), layout="constrained")
    show_image(axes[0], image, "image")
    show_signed(axes[1], s, title="signed gradient", colorbar=True)
    if title:
        fig.suptitle(title)
    return fig
