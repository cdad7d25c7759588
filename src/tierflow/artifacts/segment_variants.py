"""Quantising a built segment to the compressed variant its plan chose for its tier.

Note [variants in a build]
    A plan's ``tier_variants`` (chosen by
    :func:`~tierflow.plan.variant_planner.plan_compressed`) name, per tier, the variant
    its segments run as. :func:`tierflow.build` first exports every segment as fp32 and
    checks it against PyTorch, as for any plan; then each segment of such a tier is
    quantised by ONNX Runtime (:func:`tierflow.compress.quantize.quantize_onnx`), static
    int8 with the values that really reach the segment when the model runs on the
    calibration inputs. The quantised file replaces the fp32 one in the manifest (with
    its own sha256, and ``variant`` recorded), and is run once on calibration values to
    check that it loads and returns the shapes the manifest states. Its accuracy is not
    assumed: ``tierflow bench`` and the tests measure it. A segment the variant cannot
    change (dynamic int8 leaves Conv alone) stays fp32 and says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tierflow.artifacts.executors import OnnxExecutor
from tierflow.artifacts.manifest import FileEntry, SegmentEntry, file_digest
from tierflow.compress.quantize import quantizable, quantize_onnx
from tierflow.errors import ArtifactError, CompressionError
from tierflow.plan.variant_options import QUANT_MODES

# Calibration batch for static int8: MinMax ranges settle well before this.
CALIBRATION_SAMPLES = 256


def compress_segment(
    entry: SegmentEntry,
    variant: str,
    calibration: Mapping[str, Any] | None,
    out: Path,
) -> SegmentEntry:
    """Quantise the ONNX segment ``entry`` (in ``out``) to ``variant``; see Note [variants
    in a build].

    Parameters
    ----------
    calibration:
        ``{input name: array}`` for the segment's inputs over the calibration samples;
        needed for ``int8-static``.

    Raises
    ------
    ArtifactError
        Naming the tier when the segment runs on the PyTorch executor, takes a value
        static calibration cannot use, or the quantised file fails its check.
    """
    where = f"tier_variants.{entry.tier}: {variant}"
    if variant not in QUANT_MODES:
        raise ArtifactError(f"{where}: unknown variant; choose from {list(QUANT_MODES)}")
    if entry.executor != "onnx":
        raise ArtifactError(
            f"{where}: segment {entry.label} runs on the PyTorch executor (it could not be "
            "exported to ONNX), and variants are built by ONNX Runtime"
        )
    mode = QUANT_MODES[variant]
    source = out / entry.files[0].path
    if not quantizable(source, mode):
        return entry
    feeds: dict[str, Any] | None = None
    if mode == "static":
        if calibration is None:
            raise ArtifactError(
                f"{where}: static int8 needs calibration inputs (build(calibration=...), "
                "tierflow build --calibration-data)"
            )
        feeds = {}
        for value in entry.inputs:
            array = np.asarray(calibration[value.name])
            if value.kind != "tensor" or not np.issubdtype(array.dtype, np.floating):
                raise ArtifactError(
                    f"{where}: segment {entry.label} takes {value.name!r} ({value.kind}, "
                    f"{value.dtype}); static int8 calibrates float tensors only"
                )
            feeds[value.name] = array
    target = out / f"{entry.label}.{variant}.onnx"
    try:
        quantize_onnx(source, target, mode=mode, calibration=feeds)
    except CompressionError as exc:
        raise ArtifactError(f"{where}: {exc}") from exc
    compressed = dataclasses.replace(
        entry, files=(FileEntry(target.name, file_digest(target)),), variant=variant
    )
    _check_runs(compressed, calibration, out)
    source.unlink()
    return compressed


def _check_runs(entry: SegmentEntry, calibration: Mapping[str, Any] | None, out: Path) -> None:
    """Run the quantised segment once and compare output shapes with the manifest's."""
    if calibration is None:
        return
    sample = {v.name: np.asarray(calibration[v.name])[:2] for v in entry.inputs}
    got = OnnxExecutor(out, entry).run(sample)
    for value in entry.outputs:
        array = got[value.name]
        shape_ok = len(array.shape) == len(value.shape) and all(
            want in (-1, have) for want, have in zip(value.shape, array.shape, strict=True)
        )
        if not shape_ok or not np.all(np.isfinite(array)):
            raise ArtifactError(
                f"tier_variants.{entry.tier}: {entry.variant} segment {entry.label} returns "
                f"{value.name!r} of shape {array.shape} (finite: "
                f"{bool(np.all(np.isfinite(array)))}); the manifest says {value.shape}"
            )
