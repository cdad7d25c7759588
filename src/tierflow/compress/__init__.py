"""Compression at cuts: activation codecs for the tensors that cross links.

Each sub-module adds its names to ``__all__`` below; nothing else happens here.
"""

from tierflow.compress.bottleneck import (
    Bottleneck,
    BottleneckDecoder,
    BottleneckEncoder,
    BottleneckSettings,
    train_bottleneck,
)
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
from tierflow.compress.cut import CutParts, cut_candidates, split_at
from tierflow.compress.cut_measure import (
    DEFAULT_CUT_CODECS,
    CutCodec,
    cut_codecs_table,
    export_bottleneck,
    measure_bottleneck,
    measure_cut_codecs,
)
from tierflow.compress.finetune import finetune
from tierflow.compress.onnx_measure import interleaved_latency_ms, onnx_accuracy
from tierflow.compress.prune import channel_counts, prune_channels
from tierflow.compress.quantize import QuantMode, quantize_onnx
from tierflow.compress.variants import VARIANT_NAMES, Variant, compress_variants, variants_table

__all__ = [
    "DEFAULT_CUT_CODECS",
    "DEFAULT_LOSSLESS",
    "VARIANT_NAMES",
    "ActivationCodec",
    "AffineInt",
    "Bottleneck",
    "BottleneckDecoder",
    "BottleneckEncoder",
    "BottleneckSettings",
    "Codec",
    "CodecResult",
    "CutCodec",
    "CutParts",
    "Float16",
    "Lossless",
    "QuantMode",
    "Raw",
    "TopK",
    "Variant",
    "channel_counts",
    "codec_from_spec",
    "compress_variants",
    "cut_candidates",
    "cut_codecs_table",
    "decode_any",
    "export_bottleneck",
    "finetune",
    "interleaved_latency_ms",
    "measure_bottleneck",
    "measure_codecs",
    "measure_cut_codecs",
    "onnx_accuracy",
    "prune_channels",
    "quantize_onnx",
    "split_at",
    "train_bottleneck",
    "variants_table",
]
