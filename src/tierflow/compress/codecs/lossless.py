"""Lossless stages (zlib, zstd, lz4) applied to a codec's body, with bounded decoding.

Every decoder here is told the exact number of bytes it must produce (the codec body size
follows from the header) and refuses anything else, so a small malicious payload cannot
expand into gigabytes (a "decompression bomb") and trailing or missing bytes are caught.
"""

from __future__ import annotations

import zlib
from enum import Enum

import lz4.block
import zstandard

from tierflow.compress.codecs.header import LosslessId
from tierflow.errors import CodecError

# Levels picked by measurement (see "Note: choosing the lossless stage" in codec.py):
# zstd level 1 compresses int4/int8 ReLU activations within ~2% of level 3 while encoding
# ~1.5-2x faster; zlib level 1 likewise; lz4's default block mode is its fast mode.
ZSTD_LEVEL = 1
ZLIB_LEVEL = 1


class Lossless(Enum):
    """A lossless stage; the value is its spec name (``"zstd"``) used in codec specs."""

    NONE = "none"
    ZLIB = "zlib"
    ZSTD = "zstd"
    LZ4 = "lz4"

    @property
    def wire_id(self) -> LosslessId:
        """The id written in the payload header."""
        return LosslessId[self.name]

    @classmethod
    def from_wire_id(cls, wire_id: LosslessId) -> Lossless:
        """The stage a header's lossless id names."""
        return cls[wire_id.name]


def compress(body: bytes, stage: Lossless) -> bytes:
    """Compress ``body`` with ``stage`` (the identity for :attr:`Lossless.NONE`)."""
    if stage is Lossless.ZSTD:
        # The frame records its content size, which decompress checks before allocating.
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(body)
    if stage is Lossless.ZLIB:
        return zlib.compress(body, ZLIB_LEVEL)
    if stage is Lossless.LZ4:
        if not body:
            return b""  # lz4.block cannot encode an empty block
        # The raw block format: its size is known from the header, so lz4's own 4-byte
        # size prefix would only be a second, unchecked copy.
        return bytes(lz4.block.compress(body, store_size=False))
    return body


def decompress(data: bytes, stage: Lossless, *, size: int) -> bytes:
    """Undo :func:`compress`, insisting on exactly ``size`` bytes out.

    Raises
    ------
    CodecError
        If the stream is corrupt, truncated, followed by extra bytes, or does not decode to
        exactly ``size`` bytes.
    """
    try:
        out = _decompress(data, stage, size)
    except CodecError:
        raise
    except Exception as exc:  # each library raises its own error type on corrupt input
        raise CodecError(f"codec payload body is not a valid {stage.value} stream: {exc}") from exc
    if len(out) != size:
        raise CodecError(
            f"codec payload body decodes to {len(out)} bytes through {stage.value}; "
            f"the header's codec and shape need {size}"
        )
    return out


def _decompress(data: bytes, stage: Lossless, size: int) -> bytes:
    if stage is Lossless.ZSTD:
        content = zstandard.frame_content_size(data)
        if content != size:
            raise CodecError(
                f"codec payload body: zstd frame declares {content} bytes; the header needs {size}"
            )
        return bytes(zstandard.ZstdDecompressor().decompress(data, allow_extra_data=False))
    if stage is Lossless.ZLIB:
        inflater = zlib.decompressobj()
        out = inflater.decompress(data, size + 1)  # one byte more reveals an overlong stream
        if not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
            raise CodecError("codec payload body: zlib stream is truncated or overlong")
        return out
    if stage is Lossless.LZ4:
        if not data:
            return b""
        return bytes(lz4.block.decompress(data, uncompressed_size=size))
    return data
