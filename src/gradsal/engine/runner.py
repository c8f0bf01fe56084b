"""Runs an attribution kernel over the batches it is handed (appendix on performance).

The engine knows no method and no noise. A caller (SmoothGrad's noisy copies,
Integrated Gradients' path points) hands it batches in a fixed order; the
engine runs a kernel ``f(model, x_batch, targets) -> attribution`` on each, and
hands the results back in the same order, so sums taken by the caller do not
depend on how the work was spread. What it decides:

* which module runs: the model as given, or (``precision="auto"``) the folded
  graph of :mod:`gradsal.engine.fastpath`, checked against the model's logits;
* the layout (channels-last on the CPU for the folded graph) and autocast;
* on the CPU, how many worker threads run chunks at once and how torch's
  intra-op threads are shared among them (restored afterwards);
* how many items go in each chunk (:meth:`Engine.chunk_sizes`): at most
  ``batch_size``, in a number of chunks the workers share evenly.

At most ``workers + 1`` chunks are alive at once, so memory is bounded by the
batch size, not by the number of items.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core import forward
from . import fastpath

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "MAX_CPU_WORKERS",
    "PRECISIONS",
    "Engine",
    "Kernel",
    "check_precision",
    "chunk_sizes",
    "open_engine",
]

# Items (noisy copies, path points) per forward/backward pass when batch_size=None.
# Measured on two CPU cores with EfficientNet-Lite0 at 224 x 224
# (bench/smoothgrad_bench.py, appendix on performance): the time per copy hardly
# changes from 3 to 8 copies per pass, while memory grows with the batch; with two
# workers, batches of 3 keep the peak resident memory of the whole process under
# 1.2 GB (884 and 901 MB measured in two runs with the fused gradient pass).
DEFAULT_BATCH_SIZE = 3

# How the passes run (see open_engine).
PRECISIONS = ("auto", "float32", "bfloat16")

# On the CPU, chunks run on up to this many threads at once, each with an equal
# share of torch's intra-op threads. On two cores two single-threaded workers beat
# one two-threaded pass (the small depthwise layers of mobile networks parallelise
# poorly inside an operator); more workers were not measured.
MAX_CPU_WORKERS = 2

Kernel = Callable[..., torch.Tensor]


def check_precision(precision: object) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {PRECISIONS}; got {precision!r}"
        )
    return precision


def chunk_sizes(n_items: int, batch_size: int, workers: int) -> list[int]:
    """Items per pass, each at most ``batch_size``, in a number of chunks that
    ``workers`` share evenly (so none idles at the end), as equal as possible."""
    n_chunks = math.ceil(n_items / batch_size)
    if workers > 1 and n_chunks % workers:
        n_chunks = min(n_items, n_chunks + workers - n_chunks % workers)
    q, r = divmod(n_items, n_chunks)
    return [q + 1] * r + [q] * (n_chunks - r)


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


# One engine at a time drives the worker threads and torch's thread setting.
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
        pool = ThreadPoolExecutor(
            workers,
            thread_name_prefix="gradsal",
            initializer=torch.set_num_threads,
            initargs=(threads,),
        )
        _POOL = (key, pool)
    return _POOL[1]


@dataclass
class Engine:
    """How batches go through the model: which module, layout, autocast, workers.

    Made by :func:`open_engine`; valid inside its ``with`` block only.
    """

    model: nn.Module
    channels_last: bool = False
    autocast: torch.dtype | None = None
    workers: int = 1
    threads: int | None = (
        None  # intra-op threads per worker; None leaves torch's setting alone
    )
    pool: ThreadPoolExecutor | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def chunk_sizes(self, n_items: int, batch_size: int) -> list[int]:
        """How ``n_items`` are cut into passes for this engine's workers (:func:`chunk_sizes`)."""
        return chunk_sizes(n_items, batch_size, self.workers)

    def run(
        self, kernel: Kernel, xb: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """``kernel(model, xb, targets, **options)`` on one chunk, in the calling thread."""
        if self.channels_last and xb.ndim == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        # Autocast state is per thread, so it is entered here, in the worker.
        with torch.autocast(
            xb.device.type,
            dtype=self.autocast or torch.bfloat16,
            enabled=self.autocast is not None,
        ):
            return kernel(self.model, xb, targets, **self.options)

    def map(
        self,
        kernel: Kernel,
        batches: Iterable[tuple[Any, torch.Tensor, torch.Tensor]],
        *,
        progress: Any = None,
    ) -> Iterator[tuple[Any, torch.Tensor]]:
        """Yield ``(key, kernel result)`` for each ``(key, x_batch, targets)``, in the order given.

        With worker threads, chunks run concurrently but are taken from
        ``batches`` (so drawn, if the caller draws noise lazily) and handed back
        in one fixed order. ``progress`` is a tqdm-like bar updated by the size
        of each finished chunk. On an error or an early stop, chunks not yet
        started are cancelled and the running ones are waited for.
        """

        def done(count: int, out: torch.Tensor) -> torch.Tensor:
            if progress is not None:
                progress.update(count)
            return out

        # Only the futures and chunk sizes are kept: a finished chunk's input is freed
        # as soon as its pass ends, so memory stays bounded by the batch size.
        pending: deque = deque()
        try:
            if self.pool is None:
                for key, xb, targets in batches:
                    yield key, done(xb.shape[0], self.run(kernel, xb, targets))
                return
            for key, xb, targets in batches:
                pending.append(
                    (
                        key,
                        xb.shape[0],
                        self.pool.submit(self.run, kernel, xb, targets),
                    )
                )
                del xb, targets
                if len(pending) > self.workers:
                    k0, n0, fut = pending.popleft()
                    yield k0, done(n0, fut.result())
            while pending:
                k0, n0, fut = pending.popleft()
                yield k0, done(n0, fut.result())
        finally:
            for *_, fut in pending:
                fut.cancel()
            for *_, fut in pending:
                if not fut.cancelled():
                    fut.exception()


def _checked_rewrite(
    model: nn.Module, folded: fastpath.FoldedGraph, xb: torch.Tensor
) -> nn.Module | None:
    """The rewritten graph with weights folded from ``model``'s parameters, or None if
    its logits differ from the model's on the first example of ``xb`` (checked once
    per kind of example: a fold is exact for any weights and any batch size)."""
    cpu = xb.device.type == "cpu"
    key = (tuple(xb.shape[1:]), xb.dtype, xb.device)
    with folded.lock, torch.no_grad():
        fast = folded.module(channels_last=cpu)
        if key not in folded.verified:
            first = xb[:1]
            expected = forward(model, first)
            got = fast(
                first.contiguous(memory_format=torch.channels_last)
                if cpu
                else first
            )
            tol = 1e-3 * (1.0 + float(expected.abs().max()))
            if (
                got.shape != expected.shape
                or float((got.float() - expected.float()).abs().max()) > tol
            ):
                return None
            folded.mark_verified(key)
    return fast


@contextlib.contextmanager
def open_engine(
    model: nn.Module,
    xb: torch.Tensor,
    *,
    items_per_example: int,
    batch_size: int,
    precision: str = "auto",
    fast_path: bool = True,
    options: dict[str, Any] | None = None,
) -> Iterator[Engine]:
    """An :class:`Engine` for ``items_per_example`` items of each example of ``xb``.

    Call inside ``frozen(model)``. ``xb`` is the clean batch on the model's
    device; it is used to check the folded graph. ``precision``: ``"float32"``
    runs ``model`` as given; ``"auto"`` runs the folded graph of a convolutional
    network (:mod:`gradsal.engine.fastpath`) once its logits on ``xb`` match the
    model's, and the model as given otherwise; ``"bfloat16"`` adds bfloat16
    autocast to whichever of the two runs. ``fast_path=False`` (a kernel that
    needs the model's own modules, e.g. for hooks) always runs the model as
    given. ``options`` are keyword arguments passed to every kernel call. On
    the CPU torch's threads are split among up to :data:`MAX_CPU_WORKERS` worker
    threads for the duration, then restored.
    """
    check_precision(precision)
    engine = Engine(model, options=dict(options or {}))
    cpu = xb.device.type == "cpu"
    if precision == "bfloat16":
        engine.autocast = torch.bfloat16
    with contextlib.ExitStack() as stack:
        if cpu:
            stack.enter_context(_RUN_LOCK)
        # Tracing patches torch.nn.Module globally: it runs before any worker starts.
        use_fold = fast_path and precision != "float32" and xb.ndim == 4
        folded = fastpath.fold_for_gradients(model) if use_fold else None
        fast = _checked_rewrite(model, folded, xb) if folded else None
        if fast is not None:
            engine.model, engine.channels_last = fast, cpu
        if cpu:
            total = torch.get_num_threads()
            n_chunks = xb.shape[0] * len(
                chunk_sizes(
                    items_per_example, batch_size, min(MAX_CPU_WORKERS, total)
                )
            )
            engine.workers = max(1, min(MAX_CPU_WORKERS, total, n_chunks))
            engine.threads = max(1, total // engine.workers)
            stack.enter_context(_intra_op_threads(engine.threads))
            if engine.workers > 1:
                engine.pool = _worker_pool(engine.workers, engine.threads)
        yield engine
