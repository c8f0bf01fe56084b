"""Grad-CAM and Guided Grad-CAM (chapter 07, The Wider Family; Selvaraju et al., 2017).

At a convolutional layer with feature maps ``A^k`` (k channels of h x w),
Grad-CAM weights each channel by the spatial mean of the logit's gradient,
``alpha_k = mean_ij d f_c / d A^k_ij``, and keeps the positive part of the
weighted sum, ``ReLU(sum_k alpha_k A^k)``: a class-discriminative map at the
layer's resolution (7 x 7 for EfficientNet-Lite0's head at 224 x 224),
upsampled bilinearly to the input size. Guided Grad-CAM multiplies it, pixel by
pixel, with the Guided Backpropagation map.

Conventions of the libraries (chapter 07 compares them): Captum's
``LayerGradCam`` leaves out the ReLU unless ``relu_attributions=True`` and
returns the layer-resolution map (``LayerAttribution.interpolate`` upsamples);
pytorch-grad-cam rescales every map to [0, 1] and resizes it with OpenCV. The
maps here are unnormalised.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import nn

from ..core import Target, check_batch_tensor, forward, resolve_targets
from .base import apply_method, attribution_method
from .guided_backprop import guided_backprop

__all__ = ["default_cam_layer", "grad_cam", "guided_grad_cam"]

Layer = nn.Module | str | None


def default_cam_layer(model: nn.Module) -> nn.Module:
    """The layer Grad-CAM uses by default: the model's last ``nn.Conv2d`` (in module order).

    For EfficientNet-Lite0 that is the head convolution ``_conv_head`` (1280
    channels of 7 x 7 at 224 x 224), whose output feeds the pooling and the
    classifier through one batch norm and ReLU6. Raises if the model has no
    2-D convolution.
    """
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(
            "Grad-CAM needs a convolutional feature map, and the model has no nn.Conv2d; "
            "pass layer= a submodule whose output is (B, K, h, w)"
        )
    return convs[-1]


def _layer_of(model: nn.Module, layer: Layer) -> nn.Module:
    if layer is None:
        return default_cam_layer(model)
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError:
            raise ValueError(
                f"the model has no submodule named {layer!r}"
            ) from None
    if not isinstance(layer, nn.Module):
        raise TypeError(
            f"layer must be a submodule of the model, its name, or None; got {type(layer).__name__}"
        )
    if not any(m is layer for m in model.modules()):
        raise ValueError(
            f"layer {type(layer).__name__} is not a submodule of the model"
        )
    return layer


def _grad_cam(
    model: nn.Module, xb: torch.Tensor, target: Target, *, layer: Layer = None
) -> torch.Tensor:
    module = _layer_of(model, layer)
    captured: list[torch.Tensor] = []
    me = threading.get_ident()

    def keep(_module, _inputs, output):
        # only this thread's passes: a model may be shared
        if threading.get_ident() != me:
            return None
        if isinstance(output, torch.Tensor) and not output.requires_grad:
            # The graph starts here: the gradient is needed down to this layer only, so
            # the layers before it run without recording (a third of a forward pass
            # saved, appendix on performance). A copy, not the leaf itself, so that a
            # following in-place unit (nn.ReLU(inplace=True)) may still overwrite it.
            output = output.detach().requires_grad_(True).clone()
        captured.append(output)
        return output

    handle = module.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = forward(model, xb.detach())
            targets = resolve_targets(target, logits)
            if len(captured) != 1:
                raise ValueError(
                    f"layer {type(module).__name__} ran {len(captured)} times in one forward pass; expected once"
                )
            feats = check_batch_tensor(
                captured[0],
                xb.shape[0],
                "Grad-CAM needs a (B, K, h, w) feature map at the layer",
                ndim=4,
            )
            picked = logits.gather(1, targets.view(-1, 1)).sum()
            (grads,) = torch.autograd.grad(picked, feats)
    finally:
        handle.remove()
    alpha = grads.mean(dim=(2, 3), keepdim=True)
    cam = (alpha * feats.detach()).sum(1, keepdim=True).clamp_min(0)
    return F.interpolate(
        cam, size=xb.shape[-2:], mode="bilinear", align_corners=False
    )[:, 0]


def _guided_grad_cam(
    model: nn.Module, xb: torch.Tensor, target: Target, *, layer: Layer = None
) -> torch.Tensor:
    return guided_backprop.kernel(model, xb, target) * _grad_cam(
        model, xb, target, layer=layer
    ).unsqueeze(1)


@attribution_method(_grad_cam, fast_path=False)
def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    layer: Layer = None,
    batched: bool | None = None,
) -> torch.Tensor:
    """Grad-CAM map of the target logit: ``ReLU(sum_k alpha_k A^k)`` upsampled to the input.

    ``layer`` is a submodule of ``model`` (or its name) whose output is the
    feature map (B, K, h, w); None picks :func:`default_cam_layer`, the last
    ``nn.Conv2d`` (for EfficientNet-Lite0 the head convolution, before its
    batch norm). ``alpha_k`` is the spatial mean of the logit's gradient at
    that output. The map is upsampled bilinearly (``align_corners=False``) to
    the input's height and width and not normalised: (H, W) for one image,
    (B, H, W) for a batch. Chapter 07, The Wider Family (Selvaraju et al., 2017).
    """
    return apply_method(
        _grad_cam, model, x, target, batched=batched, layer=layer
    )


@attribution_method(_guided_grad_cam, fast_path=False)
def guided_grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    layer: Layer = None,
    batched: bool | None = None,
) -> torch.Tensor:
    """Guided Grad-CAM: :func:`gradsal.guided_backprop` times :func:`grad_cam`, pixel by pixel.

    The Grad-CAM map is broadcast over the colour channels, so the result has
    the shape of ``x``. Chapter 07, The Wider Family (Selvaraju et al., 2017).
    """
    return apply_method(
        _guided_grad_cam, model, x, target, batched=batched, layer=layer
    )
