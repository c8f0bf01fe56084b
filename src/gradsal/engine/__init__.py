"""The execution engine: runs any attribution kernel over batches (appendix on performance).

:mod:`~gradsal.engine.runner` cuts work into chunks, runs them on worker threads
and hands results back in order; :mod:`~gradsal.engine.fastpath` holds the
folded graph that makes each pass cheaper. Neither knows any method or noise.
:mod:`~gradsal.engine.allocator` holds a process-wide setting a program may
choose (the chapters and the tests do); no gradsal function applies it.
"""

from .allocator import reuse_freed_memory
from .fastpath import (
    FoldedGraph,
    GradConv,
    fold_for_gradients,
    has_conv2d,
    native_bfloat16,
    trace_and_fold,
)
from .runner import (
    DEFAULT_BATCH_SIZE,
    MAX_CPU_WORKERS,
    PRECISIONS,
    Engine,
    check_precision,
    chunk_sizes,
    open_engine,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "MAX_CPU_WORKERS",
    "PRECISIONS",
    "Engine",
    "FoldedGraph",
    "GradConv",
    "check_precision",
    "chunk_sizes",
    "fold_for_gradients",
    "has_conv2d",
    "native_bfloat16",
    "open_engine",
    "reuse_freed_memory",
    "trace_and_fold",
]
