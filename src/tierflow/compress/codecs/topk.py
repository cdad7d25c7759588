"""Top-k sparsification: keep the k largest-magnitude values, send indices plus values.

The body is ``k`` flat (C-order) indices in strictly increasing order, as uint16 when the
tensor has at most 65,536 elements and uint32 otherwise, followed by the ``k`` kept values
in the source dtype. Every dropped value becomes zero, so the error is exactly the largest
dropped magnitude. Sorted indices let the decoder check uniqueness and range in one pass,
and give a lossless stage runs of small index differences to work with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tierflow.compress.codecs.header import CodecId, Header
from tierflow.compress.codecs.stage import Activation, Encoded, check_finite, frombuffer
from tierflow.errors import CodecError

DEFAULT_FRACTION = 0.1


def _index_dtype(size: int) -> np.dtype[Any]:
    return np.dtype("<u2") if size <= 2**16 else np.dtype("<u4")


@dataclass(frozen=True)
class TopK:
    """Keep ``k`` values (a count) or ``ceil(fraction * size)`` values (a fraction).

    Give at most one of ``k`` and ``fraction``; with neither, 10% of the values are kept.
    The header records the actual count, so any :class:`TopK` decodes any topk payload.
    """

    k: int | None = None
    fraction: float | None = None

    def __post_init__(self) -> None:
        if self.k is not None and self.fraction is not None:
            raise CodecError("topk takes k (a count) or fraction, not both")
        if self.k is not None and self.k < 1:
            raise CodecError(f"topk k={self.k}; it must be at least 1")
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            raise CodecError(f"topk fraction={self.fraction}; it must be in (0, 1]")

    @property
    def codec_id(self) -> CodecId:
        """:attr:`CodecId.TOPK`."""
        return CodecId.TOPK

    @property
    def spec(self) -> str:
        """``"topk:K"`` for a count, ``"topk:F"`` (with a decimal point) for a fraction."""
        if self.k is not None:
            return f"topk:{self.k}"
        return f"topk:{self.fraction if self.fraction is not None else DEFAULT_FRACTION!r}"

    def kept(self, size: int) -> int:
        """How many of ``size`` values are kept."""
        if self.k is not None:
            return min(self.k, size)
        fraction = self.fraction if self.fraction is not None else DEFAULT_FRACTION
        return min(size, math.ceil(fraction * size))

    def _indices(self, flat: Activation) -> NDArray[np.intp]:
        size, k = flat.size, self.kept(flat.size)
        if k == size:
            return np.arange(size)
        top = np.argpartition(np.abs(flat), size - k)[size - k :]
        top.sort()
        return top

    def encode(self, array: Activation) -> Encoded:
        """Indices then values of the kept elements."""
        check_finite(array, codec=self.spec)
        flat = array.reshape(-1)
        idx = self._indices(flat)
        body = idx.astype(_index_dtype(flat.size)).tobytes() + flat[idx].tobytes()
        return Encoded(body, k=int(idx.size))

    def body_size(self, header: Header) -> int:
        """``k`` indices plus ``k`` values."""
        return header.k * (_index_dtype(header.size).itemsize + header.dtype.itemsize)

    def decode(self, header: Header, body: bytes) -> Activation:
        """Scatter the kept values into zeros, after checking the indices."""
        size, k = header.size, header.k
        index_dtype = _index_dtype(size)
        idx = np.frombuffer(body, index_dtype, k).astype(np.int64)
        if k and (idx[-1] >= size or (k > 1 and bool((np.diff(idx) <= 0).any()))):
            raise CodecError(f"codec payload topk indices are not strictly increasing below {size}")
        values = frombuffer(body, header.dtype, k, k * index_dtype.itemsize)
        if not np.isfinite(values).all():
            raise CodecError("codec payload topk values hold NaN or infinity")
        out = np.zeros(size, dtype=header.dtype)
        out[idx] = values
        result: Activation = out.reshape(header.shape)
        return result

    def max_abs_error(self, array: Activation) -> float:
        """Exactly the largest magnitude that is dropped (0 when every value is kept)."""
        size, k = array.size, self.kept(array.size)
        if k >= size:
            return 0.0
        magnitudes = np.abs(array.reshape(-1))
        return float(np.partition(magnitudes, size - k - 1)[size - k - 1])
