"""The Vanilla Gradient and Gradient x Input (chapter 01, The Vanilla Gradient).

Both are one backward pass of the target logit (Simonyan et al., 2014;
Shrikumar et al., 2016). Every function works with any ``nn.Module`` mapping
(B, ...) inputs to (B, K) logits, on any device, and leaves no trace: the
caller's tensor, the model's train/eval mode, ``requires_grad`` flags and
``.grad`` fields are as they were before the call.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core import Target, logit_gradient
from .base import apply_method, attribution_method

__all__ = ["gradient_x_input", "vanilla_gradient"]


def _gradient_x_input(
    model: nn.Module, xb: torch.Tensor, target: Target
) -> torch.Tensor:
    return logit_gradient(model, xb, target) * xb


@attribution_method(logit_gradient, fast_path=True)
def vanilla_gradient(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    batched: bool | None = None,
) -> torch.Tensor:
    """Signed gradient of the target logit with respect to the input pixels.

    Returns ``d f_c / d x`` with the shape of ``x``: (C, H, W) for one image,
    (B, C, H, W) for a batch. ``target`` is a class index, one per image, or
    ``None`` for each image's predicted class. Equation (vanilla) of chapter
    01, The Vanilla Gradient (Simonyan et al., 2014).
    """
    return apply_method(logit_gradient, model, x, target, batched=batched)


@attribution_method(_gradient_x_input, fast_path=True)
def gradient_x_input(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    batched: bool | None = None,
) -> torch.Tensor:
    """Element-wise product of the input and its vanilla gradient, ``x * d f_c / d x``.

    Same shape and target rules as :func:`vanilla_gradient`. In pixel space this
    is the first-order contribution of each pixel relative to a black image.
    Chapter 01, The Vanilla Gradient (Shrikumar et al., 2016).
    """
    return apply_method(_gradient_x_input, model, x, target, batched=batched)
