"""Per-channel affine integer quantisation: ``int8`` and ``int4`` (two codes per byte).

Each channel ``c`` (axis 1 of a ``[B, C, ...]`` tensor; a 0-d or 1-d tensor is one
channel) is mapped onto ``2**bits`` evenly spaced levels between its minimum and maximum:

    scale[c] = (max_c - min_c) / (2**bits - 1),   zero_point[c] = min_c
    code     = round((x - zero_point[c]) / scale[c]),   x' = zero_point[c] + code * scale[c]

so ``|x' - x| <= scale[c] / 2`` (plus float32 rounding, see :func:`rounding_slack`). The zero
point is the float value of code 0 rather than an integer offset: ReLU outputs have
``min_c = 0`` exactly, so zeros stay exactly zero either way, and a float keeps the
arithmetic one fused multiply-add. Per-channel rather than per-tensor scales matter for
activations, whose channel ranges differ by orders of magnitude after batch norm
(Nagel et al., "A White Paper on Neural Network Quantization", 2021, section 2.2); they cost
8 bytes per channel in the header (2 KiB for resnet18's 256 channels after layer3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from tierflow.compress.codecs.header import CodecId, Header, channel_count
from tierflow.compress.codecs.stage import (
    Activation,
    Encoded,
    check_finite,
    rounding_slack,
)
from tierflow.errors import CodecError

# Inputs are limited to |x| <= 2**126 so that zero_point + 15 * scale (or 255 * scale) can
# never overflow float32 (max ~2**128) while decoding; activations are nowhere near.
_MAX_MAGNITUDE = 2.0**126
# Channels narrower than float32's normal range get subnormal scales, whose own rounding
# can cost up to 2**bits times the smallest normal float32: 256 * 2**-126.
_SUBNORMAL_SLACK = 2.0**-118


def _channels_view(array: NDArray[Any]) -> NDArray[Any]:
    """``[B, C, rest]`` view of a C-contiguous array (one channel when ndim < 2)."""
    if array.ndim < 2:
        return array.reshape(1, 1, array.size)
    rest = int(np.prod(array.shape[2:], dtype=np.int64))  # -1 is ambiguous for empty arrays
    return array.reshape(array.shape[0], array.shape[1], rest)


def _ranges(array: Activation) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-channel minimum and maximum, in float64."""
    channels = channel_count(array.shape)
    if array.size == 0:
        zeros = np.zeros(channels, dtype=np.float64)
        return zeros, zeros
    view = _channels_view(array)
    lo = view.min(axis=(0, 2)).astype(np.float64)
    hi = view.max(axis=(0, 2)).astype(np.float64)
    return lo, hi


@dataclass(frozen=True)
class AffineInt:
    """Per-channel affine quantisation to ``bits`` (8 or 4) bits; int4 packs two per byte.

    The low nibble of each int4 byte holds the earlier element; an odd element count is
    padded with a zero nibble, which the decoder checks.
    """

    bits: Literal[8, 4] = 8

    def __post_init__(self) -> None:
        if self.bits not in (8, 4):
            raise CodecError(f"affine codec bits={self.bits}; supported: 8 or 4")

    @property
    def levels(self) -> int:
        """Largest code: 255 or 15."""
        return int(2**self.bits - 1)

    @property
    def codec_id(self) -> CodecId:
        """:attr:`CodecId.INT8` or :attr:`CodecId.INT4`."""
        return CodecId.INT8 if self.bits == 8 else CodecId.INT4

    @property
    def spec(self) -> str:
        """``"int8"`` or ``"int4"``."""
        return f"int{self.bits}"

    def _scales(self, array: Activation) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        check_finite(array, codec=self.spec)
        lo, hi = _ranges(array)
        if array.size and max(-lo.min(), hi.max()) > _MAX_MAGNITUDE:
            raise CodecError(
                f"activation holds values beyond +-2**126, outside codec {self.spec!r}'s "
                "float32 scales; use 'raw'"
            )
        scale = ((hi - lo) / self.levels).astype(np.float32)
        return scale, lo.astype(np.float32)

    def encode(self, array: Activation) -> Encoded:
        """Quantise per channel; the scales and zero points go in the header."""
        scale, zero_point = self._scales(array)
        if array.size == 0:
            return Encoded(b"", scale=scale, zero_point=zero_point)
        view = _channels_view(array)
        shifted = view - zero_point[None, :, None]
        divisor = np.where(scale > 0, scale, np.float32(1))[None, :, None]
        codes = np.rint(shifted / divisor)
        np.clip(codes, 0, self.levels, out=codes)
        flat = codes.astype(np.uint8).reshape(-1)
        if self.bits == 4:
            if flat.size % 2:
                flat = np.append(flat, np.uint8(0))
            packed: NDArray[Any] = flat[0::2] | (flat[1::2] << 4)
            return Encoded(packed.astype(np.uint8).tobytes(), scale=scale, zero_point=zero_point)
        return Encoded(flat.tobytes(), scale=scale, zero_point=zero_point)

    def body_size(self, header: Header) -> int:
        """One byte per element (int8) or per two elements (int4)."""
        return header.size if self.bits == 8 else (header.size + 1) // 2

    def decode(self, header: Header, body: bytes) -> Activation:
        """``zero_point + code * scale`` per channel, in the source dtype."""
        size = header.size
        if size == 0:
            empty: Activation = np.zeros(header.shape, dtype=header.dtype)
            return empty
        raw = np.frombuffer(body, np.uint8, self.body_size(header))
        if self.bits == 4:
            codes = np.empty(raw.size * 2, dtype=np.uint8)
            codes[0::2] = raw & 0x0F
            codes[1::2] = raw >> 4
            if size % 2 and codes[-1]:
                raise CodecError("codec payload int4 padding nibble is not zero")
            codes = codes[:size]
        else:
            codes = raw
        view = _channels_view(codes.reshape(header.shape))
        out = view.astype(np.float32)
        out *= header.scale[None, :, None]
        out += header.zero_point[None, :, None]
        # A fresh, writable array: ``out`` was allocated above, reshape only views it.
        result: Activation = out.astype(header.dtype, copy=False).reshape(header.shape)
        return result

    def max_abs_error(self, array: Activation) -> float:
        """``max_c scale[c] / 2`` plus float rounding (:func:`rounding_slack`)."""
        if array.size == 0:
            return 0.0
        scale, _ = self._scales(array)
        return 0.5 * float(scale.max()) + rounding_slack(array) + _SUBNORMAL_SLACK
