"""Compression at cuts: activation codecs for the tensors that cross links.

Each sub-module adds its names to ``__all__`` below; nothing else happens here.

Names resolve on first use (Note [Lazy public names] in :mod:`tierflow`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tierflow._lazy import lazy_names

if TYPE_CHECKING:
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

_LAZY = {
    "Bottleneck": "tierflow.compress.bottleneck",
    "BottleneckDecoder": "tierflow.compress.bottleneck",
    "BottleneckEncoder": "tierflow.compress.bottleneck",
    "BottleneckSettings": "tierflow.compress.bottleneck",
    "train_bottleneck": "tierflow.compress.bottleneck",
    "DEFAULT_LOSSLESS": "tierflow.compress.codecs",
    "ActivationCodec": "tierflow.compress.codecs",
    "AffineInt": "tierflow.compress.codecs",
    "Codec": "tierflow.compress.codecs",
    "CodecResult": "tierflow.compress.codecs",
    "Float16": "tierflow.compress.codecs",
    "Lossless": "tierflow.compress.codecs",
    "Raw": "tierflow.compress.codecs",
    "TopK": "tierflow.compress.codecs",
    "codec_from_spec": "tierflow.compress.codecs",
    "decode_any": "tierflow.compress.codecs",
    "measure_codecs": "tierflow.compress.codecs",
    "CutParts": "tierflow.compress.cut",
    "cut_candidates": "tierflow.compress.cut",
    "split_at": "tierflow.compress.cut",
    "DEFAULT_CUT_CODECS": "tierflow.compress.cut_measure",
    "CutCodec": "tierflow.compress.cut_measure",
    "cut_codecs_table": "tierflow.compress.cut_measure",
    "export_bottleneck": "tierflow.compress.cut_measure",
    "measure_bottleneck": "tierflow.compress.cut_measure",
    "measure_cut_codecs": "tierflow.compress.cut_measure",
    "finetune": "tierflow.compress.finetune",
    "interleaved_latency_ms": "tierflow.compress.onnx_measure",
    "onnx_accuracy": "tierflow.compress.onnx_measure",
    "channel_counts": "tierflow.compress.prune",
    "prune_channels": "tierflow.compress.prune",
    "QuantMode": "tierflow.compress.quantize",
    "quantize_onnx": "tierflow.compress.quantize",
    "VARIANT_NAMES": "tierflow.compress.variants",
    "Variant": "tierflow.compress.variants",
    "compress_variants": "tierflow.compress.variants",
    "variants_table": "tierflow.compress.variants",
}


lazy_names(__name__, _LAZY)


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
