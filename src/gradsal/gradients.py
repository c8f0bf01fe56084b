"""Input gradients of a logit: Vanilla Gradient, Gradient x Input and SmoothGrad.

Chapter 01-VanillaGradient derives the vanilla gradient, chapter 02-SmoothGradIntro
SmoothGrad and its modes, chapter 04-TaylorVarianceProofs what SmoothGrad estimates
and how fast its error falls. Every function works with any ``nn.Module`` mapping
(B, ...) inputs to (B, K) logits, on any device, and leaves no trace: the caller's
tensor, the model's train/eval mode, ``requires_grad`` flags and ``.grad`` fields
are as they were before the call.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "SMOOTHGRAD_MODES",
    "gradient_x_input",
    "noisy_gradients",
    "smoothgrad",
    "smoothgrad_from_samples",
    "vanilla_gradient",
]

SMOOTHGRAD_MODES = ("abs", "signed", "square", "var")

# Noisy copies per forward/backward pass when batch_size=None. Measured on two CPU
# cores with EfficientNet-Lite0 at 224 x 224 (bench/, appendix on performance).
DEFAULT_BATCH_SIZE = 5

Target = int | Sequence[int] | torch.Tensor | None


# ---------------------------------------------------------------------------
# input checks and the no-side-effects guarantee


def _check_input(x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor (e.g. float32 pixels in [0, 1]); got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"x is empty (shape {tuple(x.shape)}); expected at least one value")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values; expected finite numbers")
    return x


def _as_batch(x: object, batched: bool | None) -> tuple[torch.Tensor, bool]:
    """Return ``(x with a leading batch axis, whether one was added)``.

    With ``batched=None`` the rank decides: (C, H, W) images and (F,) vectors are
    single examples, (B, C, H, W) and (B, F) are batches. Pass ``batched`` for
    other data, e.g. ``batched=True`` for a (B, T, F) batch of sequences.
    """
    x = _check_input(x)
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
            raise ValueError(f"batched=True needs a batch axis plus at least one more; got shape {tuple(x.shape)}")
        return x, False
    return x.unsqueeze(0), True


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode and restore each one's flag afterwards."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and parameters frozen for the duration; both restored afterwards.

    Freezing stops autograd from keeping the tensors it would need for weight
    gradients, which saves memory and time; only the input gradient is wanted.
    """
    with _eval_mode(model):
        flags = [(p, p.requires_grad) for p in model.parameters()]
        for p, _ in flags:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)


def _device_of(model: nn.Module, fallback: torch.device) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return fallback


def _forward(model: nn.Module, xb: torch.Tensor) -> torch.Tensor:
    out = model(xb)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != xb.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model must map a batch of {xb.shape[0]} inputs to ({xb.shape[0]}, K) logits; got {shape}")
    return out


def _resolve_targets(target: Target, logits: torch.Tensor) -> torch.Tensor:
    """Targets as a (B,) long tensor on the logits' device, checked against K."""
    b, k = logits.shape
    if target is None:
        return logits.argmax(dim=1)
    if isinstance(target, bool):
        raise TypeError("target must be an int class index, a sequence of them or None; got a bool")
    if isinstance(target, int):
        t = torch.full((b,), target, dtype=torch.long)
    else:
        try:
            t = torch.as_tensor(target)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"target must be an int, a sequence of ints or None; got {target!r}") from None
        if t.is_floating_point() or t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"target must hold integer class indices; got dtype {t.dtype}")
        t = t.long().reshape(-1)
        if t.numel() == 1:
            t = t.expand(b)
        elif t.numel() != b:
            raise ValueError(f"target has {t.numel()} entries but x holds {b} examples; expected one per example")
    if (t < 0).any() or (t >= k).any():
        raise ValueError(f"target {t.tolist() if t.numel() <= 10 else '...'} out of range: the model has {k} classes (0 to {k - 1})")
    return t.to(logits.device)


def _logit_gradient(model: nn.Module, xb: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """d logit[target_i] / d x_i for every example of a batch, by one backward pass.

    Summing the selected logits is exact because in eval mode example i's logit
    does not depend on example j.
    """
    xb = xb.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = _forward(model, xb)
        picked = logits.gather(1, targets.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(picked, xb)
    return grad


def _prepare(model: nn.Module, x: torch.Tensor, target: Target, batched: bool | None):
    xb, added = _as_batch(x, batched)
    xb = xb.detach().to(_device_of(model, xb.device))
    with torch.no_grad():
        targets = _resolve_targets(target, _forward(model, xb))
    return xb, added, targets


# ---------------------------------------------------------------------------
# public API


def vanilla_gradient(
    model: nn.Module, x: torch.Tensor, target: Target = None, *, batched: bool | None = None
) -> torch.Tensor:
    """Signed gradient of the target logit with respect to the input pixels.

    Returns ``d f_c / d x`` with the shape of ``x``: (C, H, W) for one image,
    (B, C, H, W) for a batch. ``target`` is a class index, one per image, or
    ``None`` for each image's predicted class. Equation (vanilla) of chapter
    01-VanillaGradient (Simonyan et al., 2014).
    """
    with _frozen(model):
        xb, added, targets = _prepare(model, x, target, batched)
        grad = _logit_gradient(model, xb, targets)
    grad = grad.to(x.device)
    return grad[0] if added else grad


def gradient_x_input(
    model: nn.Module, x: torch.Tensor, target: Target = None, *, batched: bool | None = None
) -> torch.Tensor:
    """Element-wise product of the input and its vanilla gradient, ``x * d f_c / d x``.

    Same shape and target rules as :func:`vanilla_gradient`. In pixel space this
    is the first-order contribution of each pixel relative to a black image.
    See chapter 01-VanillaGradient.
    """
    return vanilla_gradient(model, x, target, batched=batched) * x.detach()


def _check_smoothgrad_args(n_samples: int, noise_level: float, batch_size: int | None) -> None:
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1; got {n_samples!r}")
    if isinstance(noise_level, bool) or not isinstance(noise_level, (int, float)) or not math.isfinite(noise_level):
        raise ValueError(f"noise_level must be a finite number >= 0 (a fraction of the image's range); got {noise_level!r}")
    if noise_level < 0:
        raise ValueError(f"noise_level must be >= 0 (a fraction of the image's range); got {noise_level}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be an integer >= 1 or None; got {batch_size!r}")


def _generator(generator: torch.Generator | int | None) -> torch.Generator | None:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise TypeError(f"generator must be a torch.Generator, an int seed or None; got {type(generator).__name__}")


def _noisy_gradient_chunks(
    model: nn.Module,
    xb: torch.Tensor,
    targets: torch.Tensor,
    n_samples: int,
    noise_level: float,
    batch_size: int,
    generator: torch.Generator | None,
    progress: bool,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(image index, gradients of a chunk of noisy copies)``.

    Noise is drawn one copy at a time, image by image, in a fixed order, so the
    draws, and hence the result, do not depend on how copies are batched.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=xb.shape[0] * n_samples, desc="SmoothGrad", unit="sample")
    try:
        for b in range(xb.shape[0]):
            image = xb[b]
            sigma = float(noise_level) * float(image.max() - image.min())
            for start in range(0, n_samples, batch_size):
                count = min(batch_size, n_samples - start)
                noise = torch.stack(
                    [torch.randn(image.shape, generator=generator, device=gen_device) for _ in range(count)]
                )
                noisy = image.unsqueeze(0) + sigma * noise.to(device=image.device, dtype=image.dtype)
                yield b, _logit_gradient(model, noisy, targets[b].expand(count))
                if bar is not None:
                    bar.update(count)
    finally:
        if bar is not None:
            bar.close()


def noisy_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    n_samples: int = 50,
    noise_level: float = 0.15,
    batch_size: int | None = None,
    generator: torch.Generator | int | None = None,
    batched: bool | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """The individual gradients ``g_i = d f_c / d x (x + eps_i)`` that SmoothGrad averages.

    Returns a tensor with a new sample axis in front of the example's axes:
    (N, C, H, W) for one image, (B, N, C, H, W) for a batch. Memory grows with
    ``n_samples``; use :func:`smoothgrad` when only the average is needed. The
    same ``generator`` seed gives the same draws as :func:`smoothgrad`, so one
    pool of samples can serve every figure of a chapter (chapter 02-SmoothGradIntro,
    chapter 04-TaylorVarianceProofs).
    """
    _check_smoothgrad_args(n_samples, noise_level, batch_size)
    gen = _generator(generator)
    with _frozen(model):
        xb, added, targets = _prepare(model, x, target, batched)
        out = torch.empty((xb.shape[0], n_samples, *xb.shape[1:]), dtype=xb.dtype, device=xb.device)
        filled = [0] * xb.shape[0]
        for b, g in _noisy_gradient_chunks(
            model, xb, targets, n_samples, noise_level, batch_size or DEFAULT_BATCH_SIZE, gen, progress
        ):
            out[b, filled[b] : filled[b] + g.shape[0]] = g
            filled[b] += g.shape[0]
    out = out.to(x.device)
    return out[0] if added else out


def smoothgrad_from_samples(samples: torch.Tensor, mode: str = "abs", dim: int = 0) -> torch.Tensor:
    """Reduce a pool of noisy gradients along ``dim`` as SmoothGrad's ``mode`` does.

    ``"abs"``: mean of |g_i|; ``"signed"``: mean of g_i; ``"square"``: mean of
    g_i^2; ``"var"``: population variance of g_i (VarGrad). Use it with the
    output of :func:`noisy_gradients`, or a slice of it to study smaller N.
    See chapter 02-SmoothGradIntro.
    """
    _check_mode(mode)
    if not isinstance(samples, torch.Tensor) or not samples.is_floating_point():
        raise TypeError("samples must be a floating-point tensor of gradients")
    if samples.numel() == 0 or samples.shape[dim] == 0:
        raise ValueError("samples is empty; expected at least one gradient along dim")
    if mode == "abs":
        return samples.abs().mean(dim)
    if mode == "signed":
        return samples.mean(dim)
    if mode == "square":
        return samples.square().mean(dim)
    return samples.var(dim, correction=0)


def _check_mode(mode: str) -> None:
    if mode not in SMOOTHGRAD_MODES:
        raise ValueError(f"mode must be one of {SMOOTHGRAD_MODES}; got {mode!r}")


def smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    n_samples: int = 50,
    noise_level: float = 0.15,
    mode: str = "abs",
    batch_size: int | None = None,
    generator: torch.Generator | int | None = None,
    batched: bool | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """SmoothGrad: gradients of the target logit averaged over noisy copies of ``x``.

    Each copy is ``x + eps`` with ``eps ~ N(0, sigma^2 I)`` and
    ``sigma = noise_level * (x.max() - x.min())`` per image (Smilkov et al., 2017).
    ``mode`` picks the average: ``"abs"`` mean |g_i| (the usual SmoothGrad map),
    ``"signed"`` mean g_i (an unbiased estimate of the gradient of the
    Gaussian-smoothed logit), ``"square"`` mean g_i^2 (SmoothGrad-squared),
    ``"var"`` population variance of g_i (VarGrad). Copies go through the model
    ``batch_size`` at a time (None: :data:`DEFAULT_BATCH_SIZE`), so memory is
    bounded by the batch, not by ``n_samples``; for a given ``generator`` seed the
    result does not depend on ``batch_size``. The target defaults to the class
    predicted for the clean image. Chapters 02-SmoothGradIntro and
    04-TaylorVarianceProofs.
    """
    _check_smoothgrad_args(n_samples, noise_level, batch_size)
    _check_mode(mode)
    gen = _generator(generator)
    with _frozen(model):
        xb, added, targets = _prepare(model, x, target, batched)
        # Running sums in float64: VarGrad subtracts two close numbers.
        acc = torch.float64 if xb.device.type != "mps" else torch.float32
        total = torch.zeros(xb.shape, dtype=acc, device=xb.device)
        total_sq = torch.zeros(xb.shape, dtype=acc, device=xb.device) if mode == "var" else None
        for b, g in _noisy_gradient_chunks(
            model, xb, targets, n_samples, noise_level, batch_size or DEFAULT_BATCH_SIZE, gen, progress
        ):
            g = g.to(acc)
            if mode == "abs":
                total[b] += g.abs().sum(0)
            elif mode == "square":
                total[b] += g.square().sum(0)
            else:
                total[b] += g.sum(0)
                if total_sq is not None:
                    total_sq[b] += g.square().sum(0)
    mean = total / n_samples
    if mode == "var":
        mean = (total_sq / n_samples - mean.square()).clamp_min(0.0)
    result = mean.to(device=x.device, dtype=x.dtype)
    return result[0] if added else result
