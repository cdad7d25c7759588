"""Activation codecs for the tensors that cross a cut: fp16, int8/int4, top-k, lossless.

``codec_from_spec("int4+zstd")`` builds a codec; its payloads describe themselves, so the
receiving tier calls ``decode_any(payload)``. ``measure_codecs`` compares codecs on an
activation (size, ratio, error, speed).
"""

from tierflow.compress.codecs.affine import AffineInt
from tierflow.compress.codecs.codec import (
    DEFAULT_LOSSLESS,
    ActivationCodec,
    Codec,
    codec_from_spec,
    decode_any,
)
from tierflow.compress.codecs.floats import Float16, Raw
from tierflow.compress.codecs.header import MAX_ELEMENTS, MAX_NDIM, CodecId, LosslessId
from tierflow.compress.codecs.lossless import Lossless
from tierflow.compress.codecs.measure import CodecResult, measure_codecs
from tierflow.compress.codecs.topk import TopK

__all__ = [
    "DEFAULT_LOSSLESS",
    "MAX_ELEMENTS",
    "MAX_NDIM",
    "ActivationCodec",
    "AffineInt",
    "Codec",
    "CodecId",
    "CodecResult",
    "Float16",
    "Lossless",
    "LosslessId",
    "Raw",
    "TopK",
    "codec_from_spec",
    "decode_any",
    "measure_codecs",
]
