"""The input checks that the metrics share (chapter 01, The Vanilla Gradient; chapter 05, Sanity Checks).

A saliency map reaches a metric as a torch tensor or a NumPy array; every metric
converts it with :func:`gradsal.core.to_numpy` (the package's one conversion)
and then checks what it needs: :func:`map_values` a flat vector of finite values
(non-negative for the concentration summaries of chapter 01), :func:`as_map` one
2-D (H, W) map as the sanity checks of chapter 05 compare them (Adebayo et al.,
2018), and :func:`check_image` one (C, H, W) image for the perturbation curves
(Petsiuk et al., 2018) and the edge baseline.
"""

from __future__ import annotations

import numpy as np
import torch

from ..core import check_input, to_numpy

__all__ = [
    "ArrayLike",
    "as_map",
    "check_fraction",
    "check_image",
    "map_values",
]

ArrayLike = torch.Tensor | np.ndarray


def map_values(
    s: object, *, name: str = "s", nonnegative: bool = True
) -> np.ndarray:
    """A map flattened to a float64 vector, checked to be non-empty, finite and (optionally) >= 0."""
    arr = to_numpy(s, name).ravel()
    if arr.size == 0:
        raise ValueError(
            f"{name} is empty; expected a map with at least one value"
        )
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if nonnegative and (arr < 0).any():
        raise ValueError(
            f"{name} has negative values; expected a magnitude map (reduce the gradient with "
            "reduce_channels, e.g. how='max', first)"
        )
    return arr


def check_fraction(fraction: float) -> float:
    """``fraction`` if it is a share of the pixels in (0, 1], else a ValueError."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction}")
    return fraction


def as_map(s: object, name: str) -> np.ndarray:
    """A floating-point (H, W) map (tensor or NumPy array) as float64, checked to be finite and non-empty."""
    if isinstance(s, torch.Tensor):
        if not s.is_floating_point():
            raise TypeError(
                f"{name} must be a floating-point map; got dtype {s.dtype}"
            )
    elif isinstance(s, np.ndarray):
        if not np.issubdtype(s.dtype, np.floating):
            raise TypeError(
                f"{name} must be a floating-point map; got dtype {s.dtype}"
            )
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy array of shape (H, W); got {type(s).__name__}"
        )
    arr = to_numpy(s, name)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D map of shape (H, W) (reduce the channels first); got shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def check_image(x: object) -> torch.Tensor:
    """``x`` if it is one finite floating-point image of shape (C, H, W) (:func:`gradsal.core.check_input`)."""
    x = check_input(x)
    if x.ndim != 3:
        raise ValueError(
            f"x must be one image of shape (C, H, W); got shape {tuple(x.shape)}"
        )
    return x
