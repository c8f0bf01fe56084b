"""Any method over a batch of examples on the engine (appendix on performance).

A public method such as :func:`gradsal.vanilla_gradient` runs the model as
given, in one pass over the whole batch: the reference that chapters compare
with Captum. :func:`attribute` runs the same kernel through the engine instead
(:mod:`gradsal.engine`): the batch is cut into chunks that worker threads share,
and a method that only calls the model runs on the folded graph. On two CPU
cores that makes a batch of photos' gradients about twice as fast; the maps
agree with the reference up to float rounding. Chapters 05 and 07 use it where
they need many maps of many photos.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from ..core import (
    Target,
    as_batch,
    check_positive_int,
    device_of,
    frozen,
    prepare,
    target_tensor,
)
from ..engine import DEFAULT_BATCH_SIZE, Engine, check_precision, open_engine
from .base import method_spec
from .gradient import vanilla_gradient

__all__ = ["attribute"]


def _chunks(
    engine: Engine,
    xb: torch.Tensor,
    targets: torch.Tensor | None,
    batch_size: int,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:
    """``(first example, examples of the chunk, their targets)`` in batch order;
    targets None: each kernel call takes its examples' predicted classes."""
    start = 0
    for count in engine.chunk_sizes(xb.shape[0], batch_size):
        stop = start + count
        part = None if targets is None else targets[start:stop]
        yield start, xb[start:stop], part
        start = stop


def attribute(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    method: Callable | None = None,
    batch_size: int | None = None,
    precision: str = "auto",
    batched: bool | None = None,
) -> torch.Tensor:
    """``method``'s attribution of every example of ``x``, run on the engine.

    ``method`` is any method :func:`gradsal.smoothgrad` accepts (None: the
    vanilla gradient; options through ``functools.partial``). The examples go
    through the model ``batch_size`` at a time (None:
    :data:`gradsal.engine.DEFAULT_BATCH_SIZE`), in chunks that the engine's
    workers share; ``precision`` is as for :func:`gradsal.smoothgrad`
    (``"auto"``: the folded graph for methods that only call the model). The
    target defaults to the class predicted for each example. Returns what
    ``method(model, x, target)`` returns, up to float rounding.
    """
    spec = method_spec(method, vanilla_gradient)
    bs = (
        check_positive_int(batch_size, "batch_size", allow_none=True)
        or DEFAULT_BATCH_SIZE
    )
    check_precision(precision)
    with frozen(model):  # also checks that model is an nn.Module
        if (
            spec.resolves_targets
        ):  # each chunk's own pass resolves and checks them
            xb, added = as_batch(x, batched)
            xb = xb.detach().to(device_of(model, xb.device))
            targets = target_tensor(target, xb.shape[0])
        else:
            xb, added, targets = prepare(model, x, target, batched)
        parts: list[torch.Tensor] = []
        with open_engine(
            model,
            xb,
            items_per_example=1,
            batch_size=bs,
            precision=precision,
            fast_path=spec.fast_path,
            options=spec.options,
        ) as engine:
            for _, out in engine.map(
                spec.kernel, _chunks(engine, xb, targets, bs)
            ):
                parts.append(out.detach().contiguous())
    out = torch.cat(parts).to(x.device)
    return out[0] if added else out
