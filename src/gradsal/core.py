"""What every gradsal method shares: input checks, batching, targets, seeds, no trace.

This module is the contract of the book's chapter 01 (The Vanilla Gradient) made
into code, and it imports nothing else of gradsal. Every attribution method,
metric and analysis helper builds on these public names:

* :func:`as_batch` checks an input and gives it a batch axis;
* :func:`eval_mode` and :func:`frozen` run a model in eval mode (parameters
  frozen) and restore every submodule's flags afterwards, even after an error;
* :func:`forward`, :func:`resolve_targets` and :func:`logit_gradient` take the
  logits, the target classes and the input gradient of a target logit;
* :func:`as_generator` is the one seeding rule: a ``torch.Generator`` as given,
  an int seeds a fresh generator, None means torch's global generator;
* :func:`check_positive_int`, :func:`check_number` and :func:`to_numpy` are the
  small checks and the one tensor-to-NumPy conversion the package uses;
  :func:`conv2d_arguments` reads a call of ``conv2d`` by argument name and
  :func:`int_pair` its stride, padding or dilation.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CONV2D_FUNCTIONS",
    "Target",
    "as_batch",
    "as_generator",
    "check_batch_tensor",
    "check_input",
    "check_number",
    "check_positive_int",
    "conv2d_arguments",
    "device_of",
    "eval_mode",
    "forward",
    "frozen",
    "int_pair",
    "logit_gradient",
    "prepare",
    "resolve_targets",
    "target_tensor",
    "to_numpy",
]

Target = int | Sequence[int] | torch.Tensor | None

# torch.conv2d and torch.nn.functional.conv2d are the same builtin; list both anyway.
CONV2D_FUNCTIONS = (F.conv2d, torch.conv2d)
_CONV2D_PARAMETERS = (
    "input",
    "weight",
    "bias",
    "stride",
    "padding",
    "dilation",
    "groups",
)
_CONV2D_DEFAULTS = {
    "bias": None,
    "stride": 1,
    "padding": 0,
    "dilation": 1,
    "groups": 1,
}


def conv2d_arguments(args: Sequence, kwargs: dict) -> dict | None:
    """The arguments of a call ``conv2d(*args, **kwargs)`` by name, defaults filled in.

    None for a call that does not fit ``torch.nn.functional.conv2d``'s signature
    (too many arguments, an unknown keyword, no input or weight). The fast path's
    graph rewrite and :func:`gradsal.models.float64_copy` read convolutions with it.
    """
    if len(args) > len(_CONV2D_PARAMETERS) or set(kwargs) - set(
        _CONV2D_PARAMETERS
    ):
        return None
    named = dict(_CONV2D_DEFAULTS)
    named.update(zip(_CONV2D_PARAMETERS, args))
    named.update(kwargs)
    return named if "input" in named and "weight" in named else None


def int_pair(v: object) -> tuple[int, int] | None:
    """A conv2d stride, padding or dilation as ``(height, width)``: an int, or a
    sequence of one or two ints. None for anything else (``padding="same"``)."""
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if (
        isinstance(v, (tuple, list))
        and len(v) in (1, 2)
        and all(isinstance(i, int) and not isinstance(i, bool) for i in v)
    ):
        return (int(v[0]), int(v[-1]))
    return None


# ---------------------------------------------------------------------------
# small checks


def check_positive_int(
    value: object, name: str, *, allow_none: bool = False
) -> int | None:
    """``value`` if it is an integer >= 1 (or None where allowed), else a ValueError naming ``name``."""
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < 1
    ):
        expected = (
            "an integer >= 1 or None" if allow_none else "an integer >= 1"
        )
        raise ValueError(f"{name} must be {expected}; got {value!r}")
    return int(value)


def check_number(
    value: object,
    name: str,
    *,
    minimum: float | None = None,
    strict: bool = False,
    meaning: str | None = None,
) -> float:
    """``value`` as a float if it is a finite real number (``>= minimum``, or ``>`` if ``strict``).

    ``meaning`` (e.g. "a fraction of the image's range") is added to the error.
    """
    about = f" ({meaning})" if meaning else ""
    if isinstance(value, bool) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise ValueError(
            f"{name} must be a finite number{about}; got {value!r}"
        )
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(
            f"{name} must be a finite number{about}; got {value!r}"
        )
    if minimum is not None and (v <= minimum if strict else v < minimum):
        raise ValueError(
            f"{name} must be {'>' if strict else '>='} {minimum:g}{about}; got {value!r}"
        )
    return v


def to_numpy(a: object, name: str = "array") -> np.ndarray:
    """A float64 NumPy copy of a tensor or array-like (detached, on the CPU)."""
    if isinstance(a, torch.Tensor):
        if a.is_complex():
            raise TypeError(
                f"{name} must hold real numbers; got dtype {a.dtype}"
            )
        return a.detach().cpu().double().numpy()
    try:
        return np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a tensor or an array of numbers; got {type(a).__name__}"
        ) from None


def as_generator(
    generator: torch.Generator | int | None,
) -> torch.Generator | None:
    """The package's one seeding rule.

    A ``torch.Generator`` is used as given (and advanced); an int seeds a fresh
    CPU generator, so the same seed gives the same draws; None means torch's
    global generator (``torch.manual_seed`` decides). Functions whose results
    the book reproduces default to a seed, never to None.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (int, np.integer)) and not isinstance(
        generator, bool
    ):
        return torch.Generator().manual_seed(int(generator))
    raise TypeError(
        f"generator must be a torch.Generator, an int seed or None; got {type(generator).__name__}"
    )


# ---------------------------------------------------------------------------
# inputs


def check_input(x: object) -> torch.Tensor:
    """``x`` if it is a non-empty, finite, floating-point tensor; else a clear error."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"x must be a floating-point tensor (e.g. float32 pixels in [0, 1]); got dtype {x.dtype}"
        )
    if x.numel() == 0:
        raise ValueError(
            f"x is empty (shape {tuple(x.shape)}); expected at least one value"
        )
    if not torch.isfinite(x).all():
        raise ValueError(
            "x contains NaN or infinite values; expected finite numbers"
        )
    return x


def as_batch(
    x: object, batched: bool | None = None
) -> tuple[torch.Tensor, bool]:
    """Return ``(x with a leading batch axis, whether one was added)`` after :func:`check_input`.

    With ``batched=None`` the rank decides: (C, H, W) images and (F,) vectors are
    single examples, (B, C, H, W) and (B, F) are batches. Pass ``batched`` for
    other data, e.g. ``batched=True`` for a (B, T, F) batch of sequences.
    """
    x = check_input(x)
    if batched is None:
        if x.ndim in (1, 3):
            return x.unsqueeze(0), True
        if x.ndim in (2, 4):
            return x, False
        raise ValueError(
            f"cannot tell whether x of shape {tuple(x.shape)} is one example or a batch: "
            "expected (C, H, W) or (B, C, H, W) images, or pass batched=True/False"
        )
    if batched:
        if x.ndim < 2:
            raise ValueError(
                f"batched=True needs a batch axis plus at least one more; got shape {tuple(x.shape)}"
            )
        return x, False
    return x.unsqueeze(0), True


# ---------------------------------------------------------------------------
# the model: modes, device, logits


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every submodule in eval mode for the duration; each one's own flag restored afterwards."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module; got {type(model).__name__}"
        )
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and parameters frozen for the duration; both restored afterwards.

    Freezing stops autograd from keeping the tensors it would need for weight
    gradients, which saves memory and time; only the input gradient is wanted.
    ``.grad`` fields are never touched, since gradients are taken with
    ``torch.autograd.grad``.
    """
    with eval_mode(model):
        flags = [(p, p.requires_grad) for p in model.parameters()]
        for p, _ in flags:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)


def device_of(model: nn.Module, fallback: torch.device) -> torch.device:
    """The device of the model's first parameter, else of its first buffer, else ``fallback``."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return fallback


def check_batch_tensor(
    value: object,
    batch: int,
    expected: str,
    *,
    ndim: int | None = None,
    min_ndim: int = 1,
) -> torch.Tensor:
    """``value`` if it is a tensor of ``batch`` rows (with ``ndim`` axes, or at
    least ``min_ndim``), else a ValueError that says ``expected`` and what came."""
    ok = (
        isinstance(value, torch.Tensor)
        and value.ndim >= max(min_ndim, 1)
        and (ndim is None or value.ndim == ndim)
        and value.shape[0] == batch
    )
    if not ok:
        got = (
            tuple(value.shape)
            if isinstance(value, torch.Tensor)
            else type(value).__name__
        )
        raise ValueError(f"{expected}; got {got}")
    return value


def forward(model: nn.Module, xb: torch.Tensor) -> torch.Tensor:
    """``model(xb)``, checked to be (B, K) logits for the B inputs of ``xb``."""
    b = xb.shape[0]
    return check_batch_tensor(
        model(xb),
        b,
        f"the model must map a batch of {b} inputs to ({b}, K) logits",
        ndim=2,
    )


def target_tensor(target: Target, batch: int) -> torch.Tensor | None:
    """``target`` as a (batch,) long tensor of class indices, or None for "the highest logit".

    The checks of :func:`resolve_targets` that need no logits: type, one class
    per example (or one for all). The class range is checked against the logits.
    """
    if target is None:
        return None
    if isinstance(target, bool):
        raise TypeError(
            "target must be an int class index, a sequence of them or None; got a bool"
        )
    if isinstance(target, int):
        return torch.full((batch,), target, dtype=torch.long)
    try:
        t = torch.as_tensor(target)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"target must be an int, a sequence of ints or None; got {target!r}"
        ) from None
    if t.is_floating_point() or t.dtype == torch.bool or t.is_complex():
        raise TypeError(
            f"target must hold integer class indices; got dtype {t.dtype}"
        )
    t = t.long().reshape(-1)
    if t.numel() == 1:
        return t.expand(batch)
    if t.numel() != batch:
        raise ValueError(
            f"target has {t.numel()} entries but x holds {batch} examples; expected one per example"
        )
    return t


def resolve_targets(target: Target, logits: torch.Tensor) -> torch.Tensor:
    """Targets as a (B,) long tensor on the logits' device, checked against K.

    ``target`` is an int (every example), a sequence or tensor with one class
    per example, or None for each example's highest logit.
    """
    b, k = logits.shape
    t = target_tensor(target, b)
    if t is None:
        return logits.argmax(dim=1)
    if (t < 0).any() or (t >= k).any():
        shown = t.tolist() if t.numel() <= 10 else "..."
        raise ValueError(
            f"target {shown} out of range: the model has {k} classes (0 to {k - 1})"
        )
    return t.to(logits.device)


def logit_gradient(
    model: nn.Module, xb: torch.Tensor, target: Target
) -> torch.Tensor:
    """``d logit[target_i] / d x_i`` for every example of a batch, by one backward pass.

    The targets are resolved against the logits of the same forward pass (None:
    each example's own top class). Summing the selected logits is exact because
    in eval mode example i's logit does not depend on example j. Equation
    (vanilla) of chapter 01, The Vanilla Gradient (Simonyan et al., 2014).
    """
    xb = xb.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = forward(model, xb)
        targets = resolve_targets(target, logits)
        picked = logits.gather(1, targets.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(picked, xb)
    return grad


def prepare(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    batched: bool | None = None,
    *,
    checked_later: bool = False,
) -> tuple[torch.Tensor, bool, torch.Tensor]:
    """``(batch on the model's device, whether a batch axis was added, (B,) targets)``.

    ``target=None`` (the predicted classes) costs a forward pass without
    gradients, as does checking given targets against the number of classes,
    unless ``checked_later`` says that the passes to come check them (every
    gradsal kernel does, through :func:`resolve_targets`); their type and count
    are checked here in any case. Call inside :func:`frozen`.
    """
    xb, added = as_batch(x, batched)
    xb = xb.detach().to(device_of(model, xb.device))
    targets = target_tensor(target, xb.shape[0])
    if targets is None or not checked_later:
        with torch.no_grad():
            targets = resolve_targets(target, forward(model, xb))
    return xb, added, targets.to(xb.device)
