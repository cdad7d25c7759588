"""Compression at cuts: activation codecs for the tensors that cross links.

Each sub-module adds its names to ``__all__`` below; nothing else happens here.
"""

from tierflow.compress.codecs import (
    DEFAULT_LOSSLESS,
    ActivationCodec,
    AffineInt,
    Codec,
    CodecResult,
    Float16,
    Lossless,
    Raw,
    TopK,
    codec_from_spec,
    decode_any,
    measure_codecs,
)

__all__ = [
    "DEFAULT_LOSSLESS",
    "ActivationCodec",
    "AffineInt",
    "Codec",
    "CodecResult",
    "Float16",
    "Lossless",
    "Raw",
    "TopK",
    "codec_from_spec",
    "decode_any",
    "measure_codecs",
]
