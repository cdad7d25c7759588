"""Float stages: ``raw`` (the array's own bytes, exact) and ``fp16`` (half precision)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tierflow.compress.codecs.header import CodecId, Header
from tierflow.compress.codecs.stage import (
    Activation,
    Encoded,
    check_finite,
    frombuffer,
)
from tierflow.errors import CodecError

_FP16_MAX = float(np.finfo(np.float16).max)  # 65504


@dataclass(frozen=True)
class Raw:
    """The array's own little-endian bytes: exact, NaN and infinity included.

    With a lossless stage (``"raw+zstd"``) this is the exact baseline the lossy codecs are
    compared with.
    """

    @property
    def codec_id(self) -> CodecId:
        """:attr:`CodecId.RAW`."""
        return CodecId.RAW

    @property
    def spec(self) -> str:
        """``"raw"``."""
        return "raw"

    def encode(self, array: Activation) -> Encoded:
        """The array's bytes."""
        return Encoded(array.tobytes())

    def body_size(self, header: Header) -> int:
        """One item of the source dtype per element."""
        return header.size * header.dtype.itemsize

    def decode(self, header: Header, body: bytes) -> Activation:
        """The array, in its source dtype."""
        out: Activation = frombuffer(body, header.dtype, header.size).reshape(header.shape)
        return out

    def max_abs_error(self, array: Activation) -> float:
        """Zero: raw is exact."""
        return 0.0


@dataclass(frozen=True)
class Float16:
    """IEEE half precision: 2 bytes per element, relative error at most 2**-11.

    Values beyond +-65504 would become infinite in half precision, so encode refuses
    them instead of sending ``inf``; use int8 (its scale adapts to any range) or raw.
    """

    @property
    def codec_id(self) -> CodecId:
        """:attr:`CodecId.FP16`."""
        return CodecId.FP16

    @property
    def spec(self) -> str:
        """``"fp16"``."""
        return "fp16"

    def encode(self, array: Activation) -> Encoded:
        """Round to float16 (round to nearest even)."""
        check_finite(array, codec=self.spec)
        if array.size and float(np.max(np.abs(array))) > _FP16_MAX:
            raise CodecError(
                f"activation holds values beyond +-{_FP16_MAX:g}, which overflow codec 'fp16'; "
                "use 'int8' or 'raw'"
            )
        return Encoded(array.astype("<f2").tobytes())

    def body_size(self, header: Header) -> int:
        """Two bytes per element."""
        return header.size * 2

    def decode(self, header: Header, body: bytes) -> Activation:
        """Widen back to the source dtype."""
        half = np.frombuffer(body, "<f2", header.size)
        out: Activation = half.astype(header.dtype).reshape(header.shape)
        return out

    def max_abs_error(self, array: Activation) -> float:
        """``2**-11 * max|x| + 2**-25``: half an ulp, relative for normal numbers and
        absolute in the subnormal range below 2**-14 (IEEE 754 binary16)."""
        if array.dtype.itemsize == 2:
            return 0.0
        return 2.0**-11 * float(np.max(np.abs(array), initial=0.0)) + 2.0**-25
