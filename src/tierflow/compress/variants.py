"""Compressed variants of one model, each exported to ONNX and measured in ONNX Runtime.

A planner choosing what to deploy on a small device needs, per variant, what it costs
(latency on that device, bytes to ship) and what it loses (accuracy). This module builds
the usual candidates and measures all three the same way: latency of single samples
timed round-robin against fp32 (Note [Interleaved timing] in ``onnx_measure``), file
size on disk, and top-1 accuracy on the test split as ONNX Runtime computes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from tierflow.compress.finetune import finetune
from tierflow.compress.onnx_measure import export_onnx, interleaved_latency_ms, onnx_accuracy
from tierflow.compress.prune import prune_channels
from tierflow.compress.quantize import quantize_onnx
from tierflow.data.dataset import DatasetSplits
from tierflow.errors import CompressionError

__all__ = ["VARIANT_NAMES", "Variant", "compress_variants", "variants_table"]

VARIANT_NAMES = ("fp32", "pruned", "int8-static", "int8-dynamic", "pruned+int8", "fp16")
_DEFAULT = ("fp32", "pruned", "int8-static", "int8-dynamic", "pruned+int8")
_CALIBRATION_SAMPLES = 256  # MinMax ranges settle well before this on MNIST-sized inputs


@dataclass(frozen=True)
class Variant:
    """One compressed model and what it measured.

    ``speedup`` is fp32 latency over this variant's, both from the same interleaved run;
    ``accuracy`` is ``None`` when no labelled data was given.
    """

    name: str
    latency_ms: float
    speedup: float
    size_bytes: int
    accuracy: float | None
    path: Path


def compress_variants(
    model: nn.Module,
    example: torch.Tensor,
    out_dir: str | Path,
    *,
    data: DatasetSplits | None = None,
    calibration: NDArray[np.float32] | None = None,
    names: Sequence[str] = _DEFAULT,
    prune_ratio: float = 0.5,
    finetune_epochs: int = 2,
    threads: int = 1,
    runs: int = 100,
    warmup: int = 10,
    seed: int = 0,
) -> list[Variant]:
    """Build the variants in ``names``, export each to ``out_dir`` and measure them.

    Parameters
    ----------
    model:
        A trained single-input classifier; never modified.
    example:
        One input batch, usually ``[1, ...]``; latencies are for this batch.
    out_dir:
        Where ``<name>.onnx`` files are written (created if missing).
    data:
        Labelled splits: ``train`` recovers pruned variants (``finetune_epochs`` epochs)
        and calibrates int8 ranges, ``test`` gives accuracy. ``None``: speed only,
        pruned variants are not fine-tuned and ``calibration`` is required.
    calibration:
        Inputs ``[N, ...]`` for static int8; default: the first 256 training samples.
    names:
        Subset of ``VARIANT_NAMES``. fp32 is always built: it is the speed baseline.
    prune_ratio:
        Fraction of channels removed per layer in ``pruned`` variants.
    threads, runs, warmup:
        ORT intra-op threads (1 mimics a single-core device), timed rounds and untimed
        warm-up runs per variant.

    Raises
    ------
    CompressionError
        For an unknown variant name, or static int8 without data or calibration.

    Examples
    --------
    >>> from tierflow.models import resolve_model
    >>> net, (x,) = resolve_model("zoo:lenet")
    >>> cal = np.random.default_rng(0).random((32, 1, 28, 28), dtype=np.float32)
    >>> out = compress_variants(net, x, "/tmp/lenet_variants", calibration=cal,
    ...                         names=("fp32", "int8-static"), runs=5)
    >>> [v.name for v in out], out[0].speedup
    (['fp32', 'int8-static'], 1.0)
    """
    unknown = [n for n in names if n not in VARIANT_NAMES]
    if unknown:
        raise CompressionError(
            f"compress_variants: unknown variant(s) {unknown}; choose from {list(VARIANT_NAMES)}"
        )
    wanted = ["fp32", *(n for n in names if n != "fp32")]
    if calibration is None and data is not None:
        calibration = data.train.x[:_CALIBRATION_SAMPLES]
    if calibration is None and {"int8-static", "pruned+int8"} & set(wanted):
        raise CompressionError(
            "compress_variants: static int8 variants need `data` or `calibration`"
        )
    out = Path(out_dir)
    paths: dict[str, Path] = {"fp32": export_onnx(model, example, out / "fp32.onnx")}
    if {"pruned", "pruned+int8"} & set(wanted):
        pruned = prune_channels(model, example, prune_ratio)
        if data is not None:
            pruned = finetune(pruned, data.train, epochs=finetune_epochs, seed=seed)
        pruned_path = export_onnx(pruned, example, out / "pruned.onnx")
        if "pruned" in wanted:
            paths["pruned"] = pruned_path
    builders: dict[str, tuple[Path, dict[str, Any]]] = {
        "int8-static": (paths["fp32"], {"mode": "static", "calibration": calibration}),
        "int8-dynamic": (paths["fp32"], {"mode": "dynamic"}),
        "fp16": (paths["fp32"], {"mode": "fp16"}),
    }
    for name in wanted:
        if name in builders:
            source, options = builders[name]
            paths[name] = quantize_onnx(source, out / f"{name}.onnx", **options)
        elif name == "pruned+int8":
            paths[name] = quantize_onnx(
                pruned_path, out / "pruned-int8.onnx", mode="static", calibration=calibration
            )
    sample = example.detach().numpy().astype(np.float32)
    latency = interleaved_latency_ms(paths, sample, threads=threads, runs=runs, warmup=warmup)
    return [
        Variant(
            name=name,
            latency_ms=latency[name],
            speedup=latency["fp32"] / latency[name],
            size_bytes=paths[name].stat().st_size,
            accuracy=None if data is None else onnx_accuracy(paths[name], data.test),
            path=paths[name],
        )
        for name in wanted
    ]


def variants_table(variants: Sequence[Variant]) -> str:
    """A plain-text table of ``variants``, one per line.

    Examples
    --------
    >>> print(variants_table([Variant("fp32", 2.0, 1.0, 2048, 0.98, Path("a.onnx"))]))
    variant        latency_ms  speedup  size_kB  accuracy
    fp32                2.000    1.00x      2.0    98.00%
    """
    lines = [f"{'variant':<13} {'latency_ms':>11} {'speedup':>8} {'size_kB':>8} {'accuracy':>9}"]
    for v in variants:
        acc = "-" if v.accuracy is None else f"{100 * v.accuracy:.2f}%"
        lines.append(
            f"{v.name:<13} {v.latency_ms:>11.3f} {v.speedup:>7.2f}x "
            f"{v.size_bytes / 1024:>8.1f} {acc:>9}"
        )
    return "\n".join(lines)
