"""gradsal: gradient saliency maps for the saliency book.

The chapters of the book (report/) derive and demonstrate every function here:
Setup (models, photos), chapter 01 The Vanilla Gradient (gradients, channel
reductions, normalisation), chapter 02 SmoothGrad and chapter 04 What
SmoothGrad Estimates (SmoothGrad over any method). The layers, from the ground
up: :mod:`~gradsal.core` (the shared contract), :mod:`~gradsal.models` and
:mod:`~gradsal.images`, :mod:`~gradsal.engine` (runs any method over batches),
:mod:`~gradsal.methods` (one file per method), :mod:`~gradsal.maps`,
:mod:`~gradsal.metrics`, :mod:`~gradsal.analysis`, :mod:`~gradsal.toydata`,
:mod:`~gradsal.plots` and :mod:`~gradsal.widgets`.
"""

import importlib

from .engine import DEFAULT_BATCH_SIZE
from .images import PHOTOS, load_image, photo_names, to_numpy_image
from .maps import REDUCTIONS, normalize, rank_correlation, reduce_channels
from .methods import (
    SMOOTHGRAD_MODES,
    ConvergedSmoothGrad,
    SamplePool,
    attribute,
    grad_cam,
    gradient_x_input,
    guided_backprop,
    guided_grad_cam,
    integrated_gradients,
    noisy_attributions,
    relative_standard_error,
    smoothgrad,
    smoothgrad_from_samples,
    smoothgrad_to_tolerance,
    vanilla_gradient,
)
from .models import (
    DEFAULT_MODEL,
    PixelNormalize,
    available_models,
    categories,
    load_model,
    top_k,
)

__version__ = "0.1.0"

# The book's repository: the Colab bootstrap cell of every chapter installs gradsal
# from here, and _config.yml's repository.url repeats it (a test keeps them equal).
REPOSITORY_URL = "https://github.com/y-oth/dst_assessment2"


def __getattr__(name: str):
    """Import a submodule on first use, e.g. ``gradsal.plots`` (keeps ``import gradsal`` light)."""
    if name.startswith("_"):
        raise AttributeError(name)
    try:
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
        raise AttributeError(
            f"module {__name__!r} has no attribute {name!r}"
        ) from None


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MODEL",
    "PHOTOS",
    "REDUCTIONS",
    "REPOSITORY_URL",
    "SMOOTHGRAD_MODES",
    "PixelNormalize",
    "ConvergedSmoothGrad",
    "SamplePool",
    "attribute",
    "available_models",
    "categories",
    "grad_cam",
    "gradient_x_input",
    "guided_backprop",
    "guided_grad_cam",
    "integrated_gradients",
    "load_image",
    "load_model",
    "noisy_attributions",
    "relative_standard_error",
    "normalize",
    "photo_names",
    "plots",
    "rank_correlation",
    "reduce_channels",
    "smoothgrad",
    "smoothgrad_from_samples",
    "smoothgrad_to_tolerance",
    "to_numpy_image",
    "top_k",
    "vanilla_gradient",
]
