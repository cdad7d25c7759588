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
from tierflow.compress.finetune import finetune
from tierflow.compress.onnx_measure import interleaved_latency_ms, onnx_accuracy
from tierflow.compress.prune import channel_counts, prune_channels
from tierflow.compress.quantize import QuantMode, quantize_onnx
from tierflow.compress.variants import VARIANT_NAMES, Variant, compress_variants, variants_table

__all__ = [
    "DEFAULT_LOSSLESS",
    "VARIANT_NAMES",
    "ActivationCodec",
    "AffineInt",
    "Codec",
    "CodecResult",
    "Float16",
    "Lossless",
    "QuantMode",
    "Raw",
    "TopK",
    "Variant",
    "channel_counts",
    "codec_from_spec",
    "compress_variants",
    "decode_any",
    "finetune",
    "interleaved_latency_ms",
    "measure_codecs",
    "onnx_accuracy",
    "prune_channels",
    "quantize_onnx",
    "variants_table",
]
