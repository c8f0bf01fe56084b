"""What an attribution method is, and how one runs on the book's contract (chapter 01, The Vanilla Gradient).

A method is a *kernel* ``f(model, x_batch, targets, **options) -> attribution``:
``x_batch`` has a batch axis and sits on the model's device, ``targets`` is a
(B,) tensor of class indices (or anything :func:`gradsal.core.resolve_targets`
accepts), and the model is already in eval mode with its parameters frozen.
:func:`apply_method` wraps a kernel into a public function that takes one
example or a batch, checks it, and leaves no trace; :func:`attribution_method`
records the kernel on that public function, so that SmoothGrad (and anything
else that runs methods over many inputs) can call the kernel directly through
the engine. This is the shape of PAIR's ``CoreSaliency`` and Captum's
``NoiseTunnel(attribution_method)``: write a method once, smooth it for free.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core import Target, as_batch, check_batch_tensor, device_of, frozen
from ..engine.runner import Kernel

__all__ = ["MethodSpec", "apply_method", "attribution_method", "method_spec"]


def attribution_method(
    kernel: Kernel, *, fast_path: bool
) -> Callable[[Callable], Callable]:
    """Decorator that records ``kernel`` on a public method.

    ``fast_path`` says whether the kernel may run on the engine's folded graph
    (an equivalent rewrite of the model, :mod:`gradsal.engine.fastpath`): true
    for kernels that only call the model, false for kernels that need its own
    modules (hooks, named layers).
    """

    def mark(public: Callable) -> Callable:
        public.kernel = kernel
        public.fast_path = fast_path
        return public

    return mark


def apply_method(
    kernel: Kernel,
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    batched: bool | None = None,
    **options: Any,
) -> torch.Tensor:
    """Run ``kernel`` on one example or a batch with gradsal's guarantees.

    ``x`` is checked (:func:`gradsal.core.as_batch`) and moved to the model's
    device; the kernel runs with the model in eval mode and its parameters
    frozen, and every flag is restored afterwards, even after an error. The
    result comes back on ``x``'s device, without the batch axis if ``x`` had
    none.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module; got {type(model).__name__}"
        )
    with frozen(model):
        xb, added = as_batch(x, batched)
        xb = xb.detach().to(device_of(model, xb.device))
        out = kernel(model, xb, target, **options)
    out = out.to(x.device)
    return out[0] if added else out


@dataclass(frozen=True)
class MethodSpec:
    """A method as the engine runs it: its kernel, fixed options, and whether the fast path applies."""

    kernel: Kernel
    options: dict[str, Any] = field(default_factory=dict)
    fast_path: bool = False
    name: str = "method"
    # gradsal kernels check their targets against the logits (resolve_targets);
    # another callable is handed them as given, so they are checked before.
    resolves_targets: bool = False


def method_spec(method: Callable | None, default: Callable) -> MethodSpec:
    """How to run ``method`` on batches: a gradsal method, a ``functools.partial`` of one, or any callable.

    ``None`` means ``default``. A gradsal method (one marked by
    :func:`attribution_method`) runs through its kernel, with the keyword
    arguments of a ``functools.partial`` as options. Any other callable is
    called as ``method(model, x_batch, targets)`` on the model as given, with
    ``x_batch`` a batch and ``targets`` a (B,) tensor of class indices.
    """
    if method is None:
        method = default
    if not callable(method):
        raise TypeError(
            "method must be an attribution function f(model, x_batch, target) -> Tensor "
            f"(e.g. gradsal.gradient_x_input) or None; got {type(method).__name__}"
        )
    options: dict[str, Any] = {}
    inner = method
    if isinstance(method, functools.partial) and hasattr(
        method.func, "kernel"
    ):
        if method.args:
            raise ValueError(
                "a functools.partial of a gradsal method may fix keyword options only "
                f"(e.g. partial(gradsal.integrated_gradients, n_steps=20)); got positional {method.args!r}"
            )
        inner = method.func
        options = {k: v for k, v in method.keywords.items() if k != "batched"}
    kernel = getattr(inner, "kernel", None)
    name = getattr(inner, "__name__", type(inner).__name__)
    if kernel is None:
        return MethodSpec(kernel=_as_kernel(method), name=name)
    return MethodSpec(
        kernel=kernel,
        options=options,
        fast_path=bool(getattr(inner, "fast_path", False)),
        name=name,
        resolves_targets=True,
    )


def _as_kernel(method: Callable) -> Kernel:
    def kernel(
        model: nn.Module, xb: torch.Tensor, targets: Target
    ) -> torch.Tensor:
        return check_batch_tensor(
            method(model, xb, targets),
            xb.shape[0],
            "method must return one attribution per example of the batch "
            f"({xb.shape[0]}, ...)",
        )

    return kernel
