"""Early-exit heads in an artifact: exporting them at build time, loading them to serve.

A head is a small module that reads one backbone value (the output of a planned exit's
node) and returns logits shaped like the model's one output. :func:`export_exit_head`
writes it as ``exit-NAME.onnx`` and checks the file against PyTorch at two batch sizes,
as segments are checked (Note [ONNX exporter] in :mod:`tierflow.artifacts.build`);
:func:`~tierflow.artifacts.exit_loading.load_tier_exits` reads a tier's heads back.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tierflow.artifacts.executors import OnnxExecutor
from tierflow.artifacts.exit_loading import head_segment
from tierflow.artifacts.manifest import (
    ExitEntry,
    FileEntry,
    SegmentEntry,
    ValueEntry,
    file_digest,
)
from tierflow.errors import ArtifactError, ExitError
from tierflow.exits.policy import policy_by_name
from tierflow.plan.exit_options import PlannedExit

# As for segments (build.py): float32 kernels of ONNX Runtime and PyTorch differ slightly.
_RTOL = 1e-4
_ATOL = 1e-4


def head_output_name(exit_name: str) -> str:
    """The name of a head's logits inside its ONNX file (never a backbone value's name:
    fx names are Python identifiers, so they contain no colon)."""
    return f"exit:{exit_name}"


def export_exit_head(
    planned: PlannedExit,
    head: nn.Module,
    segments: Sequence[SegmentEntry],
    *,
    final: str,
    values: Mapping[str, Any],
    wider: Mapping[str, Any] | None,
    out: Path,
    opset: int,
) -> ExitEntry:
    """Export ``head`` for ``planned`` into ``out`` and describe it for the manifest.

    Parameters
    ----------
    planned:
        The plan's exit: its name, node, tier, policy and threshold.
    head:
        Reads the node's output, returns logits like ``final``; it is not modified (a copy
        in eval mode is exported).
    segments:
        The built segments, in manifest order; the head follows the one of
        ``planned.tier`` that returns ``planned.node``.
    final:
        The model's one output name, which the head's answer stands in for.
    values, wider:
        Every value of a PyTorch run at the example batch and one row wider (``None``
        if the model fixes its batch size).

    Raises
    ------
    ArtifactError
        Naming the exit: an unknown policy, no segment of its tier returning its node,
        logits shaped unlike the final output, a failed export or an ONNX file that
        differs from PyTorch.
    """
    name = planned.name
    try:
        policy_by_name(planned.policy)
    except ExitError as error:
        raise ArtifactError(f"exit {name!r}: {error}") from None
    after, reads = _follows(planned, segments)
    final_entry = next(v for s in segments for v in s.outputs if v.name == final)
    output = ValueEntry(head_output_name(name), final_entry.shape, final_entry.dtype)
    module = copy.deepcopy(head).eval()
    for run in (values, wider):
        if run is not None:
            _check_logits(name, module, run[planned.node], run[final])

    path = out / f"exit-{name}.onnx"
    axes = {
        entry.name: {
            i: "batch" if i == 0 else f"{entry.name}_{i}"
            for i, d in enumerate(entry.shape)
            if d == -1
        }
        for entry in (reads, output)
        if -1 in entry.shape
    }
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                module,
                (values[planned.node],),
                str(path),
                input_names=[reads.name],
                output_names=[output.name],
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
            )
    except Exception as exc:
        path.unlink(missing_ok=True)
        raise ArtifactError(
            f"exit {name!r}: the head cannot be exported to ONNX: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    file = FileEntry(path.name, file_digest(path))
    executor = OnnxExecutor(out, head_segment(planned.tier, file, reads, output))
    for run in (values, wider):
        if run is None:
            continue
        x = run[planned.node]
        with torch.no_grad():
            want = module(x).detach().cpu().numpy()
        got = executor.run({reads.name: x.detach().cpu().numpy()})[output.name]
        if got.shape != want.shape or not np.allclose(got, want, rtol=_RTOL, atol=_ATOL):
            path.unlink(missing_ok=True)
            raise ArtifactError(
                f"exit {name!r}: the head's ONNX logits differ from PyTorch's "
                f"(shape {got.shape} vs {want.shape})"
            )
    return ExitEntry(
        name=name,
        tier=planned.tier,
        after=after,
        file=file,
        input=reads,
        output=output,
        answers=final,
        policy=planned.policy,
        threshold=planned.threshold,
    )


def _follows(planned: PlannedExit, segments: Sequence[SegmentEntry]) -> tuple[int, ValueEntry]:
    """The index of the segment the exit follows, and the value entry of its node."""
    for index, segment in enumerate(segments):
        if segment.tier != planned.tier:
            continue
        for value in segment.outputs:
            if value.name == planned.node:
                if value.kind != "tensor":
                    raise ArtifactError(
                        f"exit {planned.name!r} reads {planned.node!r}, which is a Python "
                        f"{value.kind}, not a tensor"
                    )
                return index, value
    raise ArtifactError(
        f"exit {planned.name!r} reads node {planned.node!r}, which no segment of tier "
        f"{planned.tier!r} returns (is it a model input, or unused?)"
    )


def _check_logits(name: str, head: nn.Module, x: Any, final: Any) -> None:
    with torch.no_grad():
        logits = head(x)
    if not isinstance(logits, torch.Tensor):
        raise ArtifactError(
            f"exit {name!r}: the head returns a {type(logits).__name__}, not a logits tensor"
        )
    if logits.shape != final.shape or logits.dtype != final.dtype:
        raise ArtifactError(
            f"exit {name!r}: the head returns {logits.dtype} {list(logits.shape)}, but the "
            f"model's output is {final.dtype} {list(final.shape)}; an exit must answer in "
            "its place"
        )
