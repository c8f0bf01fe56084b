"""Two maps that know nothing about the model (chapter 05, Sanity Checks).

A saliency method should beat chance and should not merely find edges, since an
edge detector already produces maps that look like explanations (Adebayo et al.,
2018). :func:`random_map` is the chance-level baseline (a seeded uniform map)
and :func:`sobel_map` the edge-detector baseline; chapter 05 scores both with
every metric it applies to the gradient methods.
"""

from __future__ import annotations

import numpy as np
import torch

from ..core import as_generator, check_positive_int, to_numpy
from .checks import check_image

__all__ = ["random_map", "sobel_map"]


def random_map(
    shape: tuple[int, int], *, generator: torch.Generator | int | None = 0
) -> torch.Tensor:
    """A map of independent Uniform(0, 1) values: the chance-level baseline.

    ``shape`` is (H, W); the values come from ``generator`` (a seed or a
    ``torch.Generator``, :func:`gradsal.core.as_generator`), so a seed gives the
    same map. Chapter 05, Sanity Checks.
    """
    if not isinstance(shape, (tuple, list)) or len(shape) != 2:
        raise ValueError(
            f"shape must be (H, W) with two positive integers; got {shape!r}"
        )
    h = check_positive_int(shape[0], "the height H of shape (H, W)")
    w = check_positive_int(shape[1], "the width W of shape (H, W)")
    return torch.rand((h, w), generator=as_generator(generator))


def sobel_map(x: torch.Tensor) -> torch.Tensor:
    """Edge strength of an image: the channel max of the Sobel gradient magnitude, (H, W).

    :func:`skimage.filters.sobel` on each channel of a (C, H, W) image, then
    the maximum over channels, the same reduction as the book's saliency maps.
    It depends on the image only, never on the model: the edge-detector
    baseline of chapter 05, Sanity Checks (Adebayo et al., 2018).
    """
    from skimage.filters import sobel

    x = check_image(x)
    edges = np.stack([sobel(channel) for channel in to_numpy(x, "x")]).max(
        axis=0
    )
    return torch.from_numpy(edges).to(device=x.device, dtype=torch.float32)
