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
import os
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import nn

from . import fastpath

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "PRECISIONS",
    "SMOOTHGRAD_MODES",
    "gradient_x_input",
    "noisy_gradients",
    "smoothgrad",
    "smoothgrad_from_samples",
    "vanilla_gradient",
]

SMOOTHGRAD_MODES = ("abs", "signed", "square", "var")

# Noisy copies per forward/backward pass when batch_size=None. Measured on two CPU
# cores with EfficientNet-Lite0 at 224 x 224 (bench/smoothgrad_bench.py, appendix
# on performance): the time per copy hardly changes from 2 to 5 copies per pass,
# while memory grows with the batch; with two workers, batches of 3 keep the peak
# resident memory of the whole process under 1.2 GB (1,059-1,081 MB measured).
DEFAULT_BATCH_SIZE = 3

# How SmoothGrad runs its passes (see smoothgrad's docstring and gradsal.fastpath).
PRECISIONS = ("auto", "float32", "bfloat16")

# On the CPU, chunks of noisy copies run on up to this many threads at once, each
# with an equal share of torch's intra-op threads. On two cores two single-threaded
# workers beat one two-threaded pass (the small depthwise layers of mobile networks
# parallelise poorly inside an operator); more workers were not measured.
MAX_CPU_WORKERS = 2

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


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")


@contextlib.contextmanager
def _intra_op_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` for the duration, then restored."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# One SmoothGrad run at a time drives the worker threads and torch's thread setting.
_RUN_LOCK = threading.RLock()
_POOL: tuple[tuple[int, int, int], ThreadPoolExecutor] | None = None


def _worker_pool(workers: int, threads: int) -> ThreadPoolExecutor:
    """A thread pool kept between calls: fresh threads cost a run about 10% on the
    CPU (their memory arenas start cold). Rebuilt when the plan or the process changes."""
    global _POOL
    key = (workers, threads, os.getpid())
    if _POOL is None or _POOL[0] != key:
        if _POOL is not None and _POOL[0][2] == key[2]:
            _POOL[1].shutdown(wait=False)
        pool = ThreadPoolExecutor(workers, thread_name_prefix="gradsal", initializer=torch.set_num_threads,
                                  initargs=(threads,))
        _POOL = (key, pool)
    return _POOL[1]


def _chunk_sizes(n_samples: int, batch_size: int, workers: int) -> list[int]:
    """Copies per pass, each at most ``batch_size``, in a number of chunks that the
    workers share evenly (so none idles at the end); the draws do not depend on it."""
    n_chunks = math.ceil(n_samples / batch_size)
    if workers > 1 and n_chunks % workers:
        n_chunks = min(n_samples, n_chunks + workers - n_chunks % workers)
    q, r = divmod(n_samples, n_chunks)
    return [q + 1] * r + [q] * (n_chunks - r)


@dataclass
class _Engine:
    """How the noisy copies go through the model: which module, layout, autocast, threads."""

    model: nn.Module
    channels_last: bool = False
    autocast: torch.dtype | None = None
    workers: int = 1
    threads: int | None = None  # intra-op threads per worker; None leaves torch's setting alone
    pool: ThreadPoolExecutor | None = None

    def gradient(self, xb: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        # Autocast state is per thread, so it is entered here, in the worker.
        with torch.autocast(xb.device.type, dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None):
            return _logit_gradient(self.model, xb, targets)


def _checked_rewrite(model: nn.Module, folded: fastpath.FoldedGraph, xb: torch.Tensor) -> nn.Module | None:
    """The rewritten graph with weights folded from ``model``'s parameters, or None if
    its logits on ``xb`` differ from the model's (checked once per kind of input)."""
    cpu = xb.device.type == "cpu"
    key = (tuple(xb.shape), xb.dtype, xb.device)
    with folded.lock, torch.no_grad():
        fast = folded.module(channels_last=cpu)
        if key not in folded.verified:
            expected = _forward(model, xb)
            got = fast(xb.contiguous(memory_format=torch.channels_last) if cpu else xb)
            tol = 1e-3 * (1.0 + float(expected.abs().max()))
            if got.shape != expected.shape or float((got.float() - expected.float()).abs().max()) > tol:
                return None
            folded.mark_verified(key)
    return fast


@contextlib.contextmanager
def _smoothgrad_run(
    model: nn.Module, x: torch.Tensor, target: Target, batched: bool | None, n_samples: int, batch_size: int,
    precision: str,
) -> Iterator[tuple[torch.Tensor, bool, torch.Tensor, _Engine]]:
    """Set up SmoothGrad's passes (inside ``_frozen(model)``); yields ``(xb, added, targets, engine)``.

    ``"float32"`` runs ``model`` as given. ``"auto"`` and ``"bfloat16"`` run the
    rewritten graph of a convolutional network (:mod:`gradsal.fastpath`) once its
    logits on the clean input match the model's (checked once per traced graph
    and kind of input: a fold is exact whatever the weights); ``"bfloat16"`` adds
    bfloat16 autocast. On the CPU torch's threads are split among up to
    :data:`MAX_CPU_WORKERS` worker threads for the noisy passes, then restored.
    """
    xb, added, targets = _prepare(model, x, target, batched)
    engine = _Engine(model)
    cpu = xb.device.type == "cpu"
    if precision == "bfloat16":
        engine.autocast = torch.bfloat16
    with contextlib.ExitStack() as stack:
        if cpu:
            stack.enter_context(_RUN_LOCK)
        # Tracing patches torch.nn.Module globally: it runs before any worker starts.
        folded = fastpath.fold_for_gradients(model) if precision != "float32" and xb.ndim == 4 else None
        fast = _checked_rewrite(model, folded, xb) if folded else None
        if fast is not None:
            engine.model, engine.channels_last = fast, cpu
        if cpu:
            total = torch.get_num_threads()
            n_chunks = xb.shape[0] * len(_chunk_sizes(n_samples, batch_size, min(MAX_CPU_WORKERS, total)))
            engine.workers = max(1, min(MAX_CPU_WORKERS, total, n_chunks))
            engine.threads = max(1, total // engine.workers)
            stack.enter_context(_intra_op_threads(engine.threads))
            if engine.workers > 1:
                engine.pool = _worker_pool(engine.workers, engine.threads)
        yield xb, added, targets, engine


def _noisy_batches(
    xb: torch.Tensor,
    n_samples: int,
    noise_level: float,
    batch_size: int,
    workers: int,
    generator: torch.Generator | None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(image index, a chunk of noisy copies of that image)`` in a fixed order.

    Noise is drawn one copy at a time, image by image, so the draws, and hence the
    result, do not depend on how copies are batched (nor on how many threads run
    the chunks: all draws happen here, in the calling thread, in this order).
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    for b in range(xb.shape[0]):
        image = xb[b]
        sigma = float(noise_level) * float(image.max() - image.min())
        for count in _chunk_sizes(n_samples, batch_size, workers):
            noise = torch.stack([torch.randn(image.shape, generator=generator, device=gen_device) for _ in range(count)])
            yield b, image.unsqueeze(0) + sigma * noise.to(device=image.device, dtype=image.dtype)


def _noisy_gradient_chunks(
    engine: _Engine,
    xb: torch.Tensor,
    targets: torch.Tensor,
    n_samples: int,
    noise_level: float,
    batch_size: int,
    generator: torch.Generator | None,
    progress: bool,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(image index, gradients of a chunk of noisy copies)``, in draw order.

    With worker threads, chunks are computed concurrently but drawn, and their
    gradients handed back, in one fixed order, so the caller's sums are the same
    as with one thread. At most ``workers + 1`` chunks are alive at a time: memory
    is bounded by the batch size, not by ``n_samples``.
    """
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=xb.shape[0] * n_samples, desc="SmoothGrad", unit="sample")

    def done(g: torch.Tensor) -> torch.Tensor:
        if bar is not None:
            bar.update(g.shape[0])
        return g

    batches = _noisy_batches(xb, n_samples, noise_level, batch_size, engine.workers, generator)
    pending: deque = deque()
    try:
        if engine.pool is None:
            for b, noisy in batches:
                yield b, done(engine.gradient(noisy, targets[b].expand(noisy.shape[0])))
            return
        for b, noisy in batches:
            pending.append((b, engine.pool.submit(engine.gradient, noisy, targets[b].expand(noisy.shape[0]))))
            if len(pending) > engine.workers:
                b0, fut = pending.popleft()
                yield b0, done(fut.result())
        while pending:
            b0, fut = pending.popleft()
            yield b0, done(fut.result())
    finally:
        for _, fut in pending:  # stopped early (an error): drop what was not started, wait for the rest
            fut.cancel()
        for _, fut in pending:
            if not fut.cancelled():
                fut.exception()
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
    precision: str = "auto",
) -> torch.Tensor:
    """The individual gradients ``g_i = d f_c / d x (x + eps_i)`` that SmoothGrad averages.

    Returns a tensor with a new sample axis in front of the example's axes:
    (N, C, H, W) for one image, (B, N, C, H, W) for a batch. Memory grows with
    ``n_samples``; use :func:`smoothgrad` when only the average is needed. The
    same ``generator`` seed and ``precision`` give the same draws and gradients as
    :func:`smoothgrad` (see there for ``precision``), so one pool of samples can
    serve every figure of a chapter (chapter 02-SmoothGradIntro, chapter
    04-TaylorVarianceProofs).
    """
    _check_smoothgrad_args(n_samples, noise_level, batch_size)
    _check_precision(precision)
    gen = _generator(generator)
    bs = batch_size or DEFAULT_BATCH_SIZE
    with _frozen(model), _smoothgrad_run(model, x, target, batched, n_samples, bs, precision) as run:
        xb, added, targets, engine = run
        out = torch.empty((xb.shape[0], n_samples, *xb.shape[1:]), dtype=xb.dtype, device=xb.device)
        filled = [0] * xb.shape[0]
        # closing(): on an error or an interrupt, the workers finish before the model is restored.
        with contextlib.closing(_noisy_gradient_chunks(engine, xb, targets, n_samples, noise_level, bs, gen, progress)) as chunks:
            for b, g in chunks:
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
    precision: str = "auto",
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

    ``precision`` chooses how the passes run; no choice changes the noise draws.
    ``"float32"`` runs the model exactly as given, in its own dtype. ``"auto"``
    (the default) does the same for models without 2-D convolutions; for a
    convolutional network it runs an equivalent rewritten graph, still in float32:
    batch norms and symmetric zero paddings folded into the convolutions and, on
    the CPU, a channels-last layout (:mod:`gradsal.fastpath`). Its maps differ
    from ``"float32"``'s by float rounding only (rank correlation above 0.99 on
    every photo of the book, tests/test_performance_equivalence.py). The rewrite
    is checked against the model's logits for the clean input the first time it
    meets a model structure and input shape, and skipped where it cannot be made
    (hooks on the model, a forward ``torch.fx`` cannot trace). ``"bfloat16"`` adds bfloat16 autocast to the rewritten graph.
    It is opt-in only: its maps are approximate (rank correlation to the float32
    map about 0.95 at N = 8 on the cat photo), and on CPUs without native
    bfloat16 (AVX512-BF16 or AMX) it is emulated and many times slower. On the
    CPU up to :data:`MAX_CPU_WORKERS` chunks run at once on worker threads, each
    with its share of ``torch.get_num_threads()`` (restored afterwards); the
    sums are still taken in one fixed order. The appendix on performance
    measures each choice.
    """
    _check_smoothgrad_args(n_samples, noise_level, batch_size)
    _check_mode(mode)
    _check_precision(precision)
    gen = _generator(generator)
    bs = batch_size or DEFAULT_BATCH_SIZE
    with _frozen(model), _smoothgrad_run(model, x, target, batched, n_samples, bs, precision) as run:
        xb, added, targets, engine = run
        # Running sums in float64: VarGrad subtracts two close numbers, and exact sums
        # of float32 gradients make the result independent of how copies are chunked.
        acc = torch.float64 if xb.device.type != "mps" else torch.float32
        total = torch.zeros(xb.shape, dtype=acc, device=xb.device)
        total_sq = torch.zeros(xb.shape, dtype=acc, device=xb.device) if mode == "var" else None
        # closing(): on an error or an interrupt, the workers finish before the model is restored.
        with contextlib.closing(_noisy_gradient_chunks(engine, xb, targets, n_samples, noise_level, bs, gen, progress)) as chunks:
            for b, g in chunks:
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
