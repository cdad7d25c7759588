"""The `Executor` seam: what a tier service runs for its segment.

Executors take and return named numpy arrays (the wire's raw little-endian tensors map
onto them without copies). Built artifacts provide ONNX Runtime and PyTorch executors;
tests and simulations can provide any object with this shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class IOSpec:
    """A named tensor an executor takes or returns.

    ``shape`` uses ``-1`` for a dynamic dimension (the batch); ``dtype`` is a numpy dtype
    name such as ``"float32"`` or ``"int64"``.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str

    def accepts(self, array: NDArray[np.generic]) -> bool:
        if array.dtype != np.dtype(self.dtype) or array.ndim != len(self.shape):
            return False
        return all(want in (-1, got) for want, got in zip(self.shape, array.shape, strict=True))


@runtime_checkable
class Executor(Protocol):
    """Runs one segment: named inputs in, named outputs out."""

    @property
    def inputs(self) -> tuple[IOSpec, ...]: ...

    @property
    def outputs(self) -> tuple[IOSpec, ...]: ...

    def run(self, inputs: Mapping[str, NDArray[np.generic]]) -> dict[str, NDArray[np.generic]]: ...
