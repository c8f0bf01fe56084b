"""Attribution methods, one file each, on one contract (:mod:`gradsal.methods.base`).

A method is a kernel ``f(model, x_batch, targets) -> attribution`` wrapped into
a public function that takes one example or a batch. :mod:`.gradient` holds the
Vanilla Gradient and Gradient x Input (chapter 01); :mod:`.smoothing` smooths
any of them (chapter 02); :mod:`.integrated_gradients`, :mod:`.guided_backprop`
and :mod:`.grad_cam` are the wider family (chapter 07); :mod:`.batched`
runs any of them over a batch on the engine.
"""

from .base import MethodSpec, apply_method, attribution_method, method_spec
from .batched import attribute
from .grad_cam import default_cam_layer, grad_cam, guided_grad_cam
from .gradient import gradient_x_input, vanilla_gradient
from .guided_backprop import GuidedRule, guided_backprop
from .integrated_gradients import IG_RULES, integrated_gradients, quadrature
from .smoothing import (
    SMOOTHGRAD_MODES,
    ConvergedSmoothGrad,
    SamplePool,
    gaussian_noise,
    noise_sigma,
    noisy_attributions,
    relative_standard_error,
    smoothgrad,
    smoothgrad_from_samples,
    smoothgrad_to_tolerance,
)

__all__ = [
    "IG_RULES",
    "SMOOTHGRAD_MODES",
    "GuidedRule",
    "MethodSpec",
    "ConvergedSmoothGrad",
    "SamplePool",
    "apply_method",
    "attribute",
    "attribution_method",
    "default_cam_layer",
    "gaussian_noise",
    "grad_cam",
    "gradient_x_input",
    "guided_backprop",
    "guided_grad_cam",
    "integrated_gradients",
    "method_spec",
    "noise_sigma",
    "noisy_attributions",
    "relative_standard_error",
    "quadrature",
    "smoothgrad",
    "smoothgrad_from_samples",
    "smoothgrad_to_tolerance",
    "vanilla_gradient",
]
