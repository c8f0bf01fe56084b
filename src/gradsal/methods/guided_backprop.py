"""Guided Backpropagation (chapter 07, The Wider Family; Springenberg et al., 2015).

The backward pass of every ReLU-like unit is replaced by the guided rule: the
gradient passes only where the unit is active (its input strictly between its
kinks: ``z > 0`` for ReLU, ``0 < z < 6`` for ReLU6) *and* the incoming gradient
is positive. Everything else (convolutions, pooling, normalisation) is
differentiated as usual.

The rule is applied with a ``torch.overrides.TorchFunctionMode`` that, for the
duration of one call and in the calling thread only, routes the calls of
``relu``, ``relu6`` and ``hardtanh`` with lower kink 0 through a custom
autograd function. It sees every call, whether the model makes it through a
module (``nn.ReLU``, ``nn.ReLU6``, ``nn.Hardtanh(0, t)``, one module used several
times) or as a function (``F.relu``, ``torch.relu``, ``x.relu()``), and it
registers no hook on the model, so nothing stays behind even when the call
fails, and two threads can explain with one model at once. Hook-based
implementations act on the module types they know: Captum's
``GuidedBackprop`` hooks ``nn.ReLU`` modules only, so on a ReLU6 network such as
EfficientNet-Lite0 it returns the plain gradient (chapter 07 shows it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..core import Target, logit_gradient
from .base import apply_method, attribution_method

__all__ = ["GuidedRule", "guided_backprop"]


class _GuidedClamp(torch.autograd.Function):
    """``clamp(z, lower, upper)`` forward; the guided rule backward.

    The mask is not stored: ``lower < z < upper`` exactly where ``lower < out <
    upper``, so the backward is torch's own ``threshold_backward`` or
    ``hardtanh_backward`` of the positive part of the incoming gradient, on the
    tensor torch's autograd would save for the same call (the output for ReLU
    and for in-place calls, the input for hardtanh). A model that works under
    plain autograd works here. Storing a mask instead cost two comparisons and a
    logical and in the forward pass and a conversion and a product in the
    backward, for every activation (appendix on performance, "The wider family").
    """

    @staticmethod
    def forward(
        ctx, z: torch.Tensor, lower: float, upper: float | None, keep_out: bool
    ) -> torch.Tensor:
        out = z.clamp(min=lower, max=upper)
        ctx.save_for_backward(out if keep_out else z)
        ctx.kinks = (lower, upper)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (kept,) = ctx.saved_tensors
        lower, upper = ctx.kinks
        positive = grad.clamp_min(0)
        if upper is None:
            g = torch.ops.aten.threshold_backward(positive, kept, lower)
        else:
            g = torch.ops.aten.hardtanh_backward(positive, kept, lower, upper)
        return g, None, None, None


# function -> (kinks, or None for hardtanh whose kinks are its arguments; position of `inplace`)
_RELU_LIKE = {
    F.relu: ((0.0, None), 1),
    torch.relu: ((0.0, None), None),
    torch.Tensor.relu: ((0.0, None), None),
    torch.relu_: ((0.0, None), "always"),
    torch.Tensor.relu_: ((0.0, None), "always"),
    F.relu6: ((0.0, 6.0), 1),
    F.hardtanh: (None, 3),
    F.hardtanh_: (None, "always"),
}


def _relu_like(
    func, args: tuple, kwargs: dict
) -> tuple[tuple[float, float | None], bool] | None:
    """``((0, upper), in place?)`` if ``func(*args, **kwargs)`` is a ReLU-like call, else None."""
    try:
        entry = _RELU_LIKE.get(func)
    except TypeError:  # an unhashable callable cannot be one of ours
        return None
    if entry is None:
        return None
    kinks, where = entry
    if (
        kinks is None
    ):  # hardtanh(z, min_val=-1, max_val=1): ReLU-like only with min_val 0
        lower = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
        upper = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
        if float(lower) != 0.0:
            return None
        kinks = (0.0, float(upper))
    if where == "always":
        in_place = True
    elif where is None:
        in_place = False
    else:
        in_place = (
            bool(args[where])
            if len(args) > where
            else bool(kwargs.get("inplace", False))
        )
    return kinks, in_place


class GuidedRule(TorchFunctionMode):
    """Context manager: the guided backward rule at every ReLU-like call made inside it.

    Counts the calls it changed in :attr:`calls` (0 means the model has no
    ReLU-like unit and the result is the plain gradient). Chapter 07, The
    Wider Family.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        relu_like = _relu_like(func, args, kwargs)
        if relu_like is None:
            return func(*args, **kwargs)
        (lower, upper), in_place = relu_like
        self.calls += 1
        z = args[0]
        # In place, z is overwritten with the output: keep the private output instead.
        out = _GuidedClamp.apply(z, lower, upper, in_place or upper is None)
        return z.copy_(out) if in_place else out


def _guided_backprop(
    model: nn.Module, xb: torch.Tensor, target: Target
) -> torch.Tensor:
    # The rule acts on calls, not on modules, so it also applies on the engine's
    # folded graph (the same ReLU-like calls around folded convolutions): SmoothGrad
    # of Guided Backprop takes the fast path.
    with GuidedRule():
        return logit_gradient(model, xb, target)


@attribution_method(_guided_backprop, fast_path=True)
def guided_backprop(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    batched: bool | None = None,
) -> torch.Tensor:
    """Guided Backpropagation map of the target logit, with the shape of ``x``.

    The gradient of the logit with the guided rule at every ReLU-like unit:
    where the unit is active and the incoming gradient positive, the gradient
    passes; elsewhere it is 0 (see the module docstring for which calls count).
    Target and shape rules as :func:`gradsal.vanilla_gradient`. Chapter 07,
    The Wider Family (Springenberg et al., 2015).
    """
    return apply_method(_guided_backprop, model, x, target, batched=batched)
