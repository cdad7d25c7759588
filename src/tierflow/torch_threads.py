"""Running a block of PyTorch work on a given number of intra-op threads.

Note [One torch thread]
    MNIST-sized models and exit heads do microseconds of work per op, so extra threads
    only add synchronisation, and on a busy host they wait for each other's time slices.
    Measured on the 2-core host: 3 epochs of LeNet-5 on mnist5k's 3,500 training samples
    took 0.76 s with one thread and 6.8 s with two (load average ~5); an 8-epoch fusion
    training run went from 4 s to over 150 s under load with one thread per core; an exit
    head timed 0.08 ms alone and 32 ms while a training job shared the cores.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads, then restore the old count.

    Examples
    --------
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, not {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
