"""Allocator settings for a process that serves a tier (``tierflow serve``), never a library.

Note [Keeping large buffers mapped]
-----------------------------------
Every large message a tier receives or sends is a fresh ``bytes`` object of the tensor's
size. glibc serves allocations above ``M_MMAP_THRESHOLD`` with their own ``mmap`` and
unmaps them on ``free``, and trims the heap above ``M_TRIM_THRESHOLD``, so each one costs
a page fault per 4 KiB page touched (2,441 for 10 MB) and an ``munmap``. Raising
``M_MMAP_THRESHOLD`` (option -3) to the largest value glibc accepts (32 MiB on 64-bit;
larger buffers are still mapped) and disabling trimming (``M_TRIM_THRESHOLD``, option -1,
set to -1) lets freed buffers be reused without faults.
This is a process-wide choice that raises the server's resident memory to its peak
working set, which is why only the serving process calls it, never library code that
runs in a user's process. Measured in docs/benchmarks.md, "Per-hop overhead".
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX_BYTES = 32 * 1024 * 1024  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit


def tune_allocator() -> bool:
    """Keep large freed buffers in the heap (see Note [Keeping large buffers mapped]).

    Call only from a process that exists to serve tiers (``tierflow serve``). Returns
    whether glibc accepted both settings (False on other C libraries: nothing changes).
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    kept = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX_BYTES)
    untrimmed = mallopt(_M_TRIM_THRESHOLD, -1)
    return bool(kept and untrimmed)
