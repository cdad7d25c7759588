"""Allocator settings for a process that moves large tensors: opt-in and process-wide.

Note [Keeping large buffers mapped]
-----------------------------------
Every large message a tier receives or sends is a fresh ``bytes`` object of the tensor's
size. glibc serves allocations above ``M_MMAP_THRESHOLD`` with their own ``mmap`` and
unmaps them on ``free``, and trims the heap above ``M_TRIM_THRESHOLD``, so each one costs
a page fault per 4 KiB page touched (2,441 for 10 MB) and an ``munmap``. Raising
``M_MMAP_THRESHOLD`` (option -3) to the largest value glibc accepts (32 MiB on 64-bit;
larger buffers are still mapped) and disabling trimming (``M_TRIM_THRESHOLD``, option -1,
set to -1) lets freed buffers be reused without faults.
This is a process-wide choice that raises the process's resident memory to its peak
working set. Serving processes (``tierflow serve``) make it; library code that runs in a
user's process (``connect``, ``Client``) never does. An application that sends or
receives tensors of megabytes through a client may call :func:`tune_allocator` itself,
once, knowing it affects every allocation of its process; ``tierflow bench-hop`` does so
for its client process (raw TCP and tier clients alike, see Note [Fair hop baseline] in
:mod:`tierflow.measure.hop_bench`). Measured in docs/benchmarks.md, "Per-hop overhead".
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

    Process-wide: call it from a process's entry point (a serving process, a benchmark,
    an application that moves large tensors), never from library code. Returns whether
    glibc accepted both settings (False on other C libraries: nothing changes).

    Examples
    --------
    >>> from tierflow.runtime.allocator import tune_allocator
    >>> tune_allocator()  # doctest: +SKIP
    True
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
