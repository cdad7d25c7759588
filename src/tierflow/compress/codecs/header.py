"""The self-describing header every codec payload starts with, and its validation.

Note: payload layout (version 1)
--------------------------------
All integers and floats are little-endian; offsets are in bytes::

    0   4   magic          b"TFAC" (tierflow activation codec)
    4   1   version        1
    5   1   codec id       0 raw, 1 fp16, 2 int8, 3 int4, 4 topk      (:class:`CodecId`)
    6   1   lossless id    0 none, 1 zlib, 2 zstd, 3 lz4              (:class:`LosslessId`)
    7   1   dtype id       1 float16, 2 float32, 3 float64 (the array given to encode)
    8   1   ndim           0 .. MAX_NDIM
    9   3   reserved       zero
    12  8   k              uint64: values kept by topk; 0 for every other codec
    20  8n  shape          ndim x uint64
    ..  4C  scale          int8/int4 only: C float32, C = shape[1] (1 if ndim < 2)
    ..  4C  zero point     int8/int4 only: C float32 (the value code 0 decodes to)
    ..  4   header crc32   zlib.crc32 of every byte above
    ..      body           the codec's data, passed through the lossless stage

The body's size is not stored: it follows from the codec, shape and k, and the decoder
insists on exactly that many bytes (after lossless decoding), so truncated or padded
payloads are refused. The CRC covers only the header (tens to a few thousand bytes): a
corrupted shape, dtype or scale would silently decode to the wrong tensor, whereas the
body is covered by the transport (TCP checksums, TLS records) and a corrupted lossless
stream is refused by its own decoder.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tierflow.errors import CodecError

MAGIC = b"TFAC"
VERSION = 1
MAX_NDIM = 8
# A decoder must not allocate unbounded memory because a short header says so: 2**28
# elements is 1 GiB of float32, far above any cut activation in the zoo or torchvision
# at 224x224 (resnet18 after conv1 is 0.8 M elements per image), and gRPC messages are
# capped at 2 GiB anyway.
MAX_ELEMENTS = 2**28

_FIXED = struct.Struct("<4sBBBBB3xQ")  # magic, version, codec, lossless, dtype, ndim, k
_CRC = struct.Struct("<I")


class CodecId(IntEnum):
    """The lossy (or raw) stage a payload was encoded with."""

    RAW = 0
    FP16 = 1
    INT8 = 2
    INT4 = 3
    TOPK = 4


class LosslessId(IntEnum):
    """The lossless stage applied to the body after the codec."""

    NONE = 0
    ZLIB = 1
    ZSTD = 2
    LZ4 = 3


_DTYPES: dict[int, np.dtype[Any]] = {
    1: np.dtype("<f2"),
    2: np.dtype("<f4"),
    3: np.dtype("<f8"),
}
_DTYPE_IDS = {dt: i for i, dt in _DTYPES.items()}
AFFINE_CODECS = frozenset({CodecId.INT8, CodecId.INT4})


def _empty() -> NDArray[np.float32]:
    return np.zeros(0, dtype=np.float32)


@dataclass(frozen=True)
class Header:
    """A decoded payload header (see the layout note at the top of this module).

    Attributes
    ----------
    codec_id, lossless_id:
        Which codec and lossless stage produced the payload.
    dtype:
        Little-endian float dtype of the array that was encoded; decoding returns it.
    shape:
        Shape of that array.
    k:
        Number of values kept (topk); 0 for the other codecs.
    scale, zero_point:
        Per-channel float32 affine parameters (int8/int4); empty otherwise.
    """

    codec_id: CodecId
    lossless_id: LosslessId
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    k: int = 0
    scale: NDArray[np.float32] = field(default_factory=_empty)
    zero_point: NDArray[np.float32] = field(default_factory=_empty)

    @property
    def size(self) -> int:
        """Number of elements of the encoded array."""
        return int(np.prod(self.shape, dtype=np.int64))


def channel_count(shape: tuple[int, ...]) -> int:
    """Channels along axis 1 of ``[B, C, ...]``; a 0-d or 1-d tensor is one channel."""
    return shape[1] if len(shape) >= 2 else 1


def dtype_id(dtype: np.dtype[Any]) -> int:
    """The wire id of a float dtype, or CodecError naming the unsupported dtype."""
    found = _DTYPE_IDS.get(dtype.newbyteorder("<")) if dtype.kind == "f" else None
    if found is None:
        raise CodecError(
            f"activation dtype {dtype} is not supported; codecs take float16, float32 or "
            "float64 arrays"
        )
    return found


def check_shape(shape: tuple[int, ...], *, what: str) -> None:
    """Refuse shapes beyond MAX_NDIM dimensions or MAX_ELEMENTS elements."""
    if len(shape) > MAX_NDIM:
        raise CodecError(f"{what} has {len(shape)} dimensions; at most {MAX_NDIM} are supported")
    size = 1
    for dim in shape:
        size *= dim
    if size > MAX_ELEMENTS:
        raise CodecError(
            f"{what} {shape} has {size} elements; at most {MAX_ELEMENTS} are supported"
        )


def pack_header(header: Header) -> bytes:
    """Serialise a header, CRC included."""
    parts = [
        _FIXED.pack(
            MAGIC,
            VERSION,
            header.codec_id,
            header.lossless_id,
            dtype_id(header.dtype),
            len(header.shape),
            header.k,
        ),
        np.asarray(header.shape, dtype="<u8").tobytes(),
    ]
    if header.codec_id in AFFINE_CODECS:
        parts.append(header.scale.astype("<f4").tobytes())
        parts.append(header.zero_point.astype("<f4").tobytes())
    head = b"".join(parts)
    return head + _CRC.pack(zlib.crc32(head))


def read_header(payload: bytes) -> tuple[Header, int]:
    """Parse and validate the header of ``payload``.

    Returns
    -------
    (header, offset)
        The header, and the offset of the body in ``payload``.

    Raises
    ------
    CodecError
        Naming the field at fault: magic, version, codec id, lossless id, dtype id,
        ndim, reserved bytes, shape limits, length, CRC, scale or zero point.
    """
    if len(payload) < _FIXED.size:
        raise CodecError(
            f"codec payload is {len(payload)} bytes, shorter than the {_FIXED.size}-byte "
            "fixed header"
        )
    magic, version, codec, lossless, dtype, ndim, k = _FIXED.unpack_from(payload)
    if magic != MAGIC:
        raise CodecError(f"codec payload magic is {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise CodecError(f"codec payload version is {version}; this tierflow reads {VERSION}")
    if codec not in CodecId._value2member_map_:
        raise CodecError(f"codec payload codec id {codec} is unknown (known: 0-4)")
    if lossless not in LosslessId._value2member_map_:
        raise CodecError(f"codec payload lossless id {lossless} is unknown (known: 0-3)")
    if dtype not in _DTYPES:
        raise CodecError(f"codec payload dtype id {dtype} is unknown (known: 1-3)")
    if ndim > MAX_NDIM:
        raise CodecError(f"codec payload ndim is {ndim}; at most {MAX_NDIM} are supported")
    if payload[9:12] != b"\0\0\0":
        raise CodecError("codec payload reserved bytes 9-11 are not zero")
    offset = _FIXED.size + 8 * ndim
    if len(payload) < offset + _CRC.size:
        raise CodecError(f"codec payload is truncated inside its shape ({len(payload)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(payload, "<u8", ndim, _FIXED.size))
    check_shape(shape, what="codec payload shape")
    codec_id = CodecId(codec)
    channels = channel_count(shape) if codec_id in AFFINE_CODECS else 0
    end = offset + 8 * channels
    if len(payload) < end + _CRC.size:
        raise CodecError(
            f"codec payload is truncated inside its scale/zero-point arrays "
            f"({len(payload)} bytes, header needs {end + _CRC.size})"
        )
    (crc,) = _CRC.unpack_from(payload, end)
    if crc != zlib.crc32(payload[:end]):
        raise CodecError("codec payload header CRC does not match: the header is corrupted")
    scale = np.frombuffer(payload, "<f4", channels, offset).astype(np.float32)
    zero_point = np.frombuffer(payload, "<f4", channels, offset + 4 * channels).astype(np.float32)
    header = Header(
        codec_id, LosslessId(lossless), _DTYPES[dtype], shape, int(k), scale, zero_point
    )
    _check_params(header)
    return header, end + _CRC.size


def _check_params(header: Header) -> None:
    size = header.size
    if header.codec_id == CodecId.TOPK:
        if header.k > size:
            raise CodecError(f"codec payload k={header.k} exceeds the {size} elements of shape")
    elif header.k != 0:
        raise CodecError(f"codec payload k is {header.k}; only topk payloads carry k")
    if header.codec_id not in AFFINE_CODECS:
        return
    if not (np.isfinite(header.scale).all() and np.isfinite(header.zero_point).all()):
        raise CodecError("codec payload scale or zero point is NaN or infinite")
    if (header.scale < 0).any():
        raise CodecError("codec payload scale is negative")
    # Decoding computes zero_point + code * scale in float32; refuse parameters that could
    # overflow it (encode limits inputs to |x| <= 2**126, far inside this).
    levels = 255 if header.codec_id == CodecId.INT8 else 15
    reach = np.abs(header.zero_point.astype(np.float64)) + levels * header.scale.astype(np.float64)
    if (reach > np.finfo(np.float32).max).any():
        raise CodecError("codec payload scale and zero point decode beyond float32 range")
