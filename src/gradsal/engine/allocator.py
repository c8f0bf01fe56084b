"""The C allocator's handling of freed memory, a setting for the program that runs gradsal (appendix on performance)."""

from __future__ import annotations

import ctypes
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "reuse_freed_memory"]

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 2**20  # glibc's own ceiling for the dynamic threshold
TRIM_THRESHOLD = 2**30


def reuse_freed_memory() -> bool:
    """Have glibc's ``malloc`` keep freed memory for reuse instead of giving it back.

    A gradient pass frees tens of megabytes of activations and the next pass
    asks for them again. By default glibc maps large blocks afresh and trims
    the heap, so every pass faults in new zeroed pages; keeping them makes
    gradsal's passes on EfficientNet-Lite0 about a fifth faster (appendix on
    performance). Blocks under :data:`MMAP_THRESHOLD` come from the heap and up
    to :data:`TRIM_THRESHOLD` of free heap is kept. The setting is
    process-wide and lasting, like ``torch.set_num_threads``: a program (the
    chapters, the tests) calls it; no gradsal function does. Returns True
    where it was applied (Linux with glibc) and False elsewhere, where nothing
    changes.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # both calls run: each returns 1 where glibc accepted the value
    mmap_ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    trim_ok = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return mmap_ok and trim_ok
