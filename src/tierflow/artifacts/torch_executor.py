"""The PyTorch executor: a segment that could not be exported to ONNX, rebuilt from its spec.

Imported only when a manifest has such a segment, so that a tier serving ONNX segments
never loads PyTorch (Note [Lazy public names] in :mod:`tierflow`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from tierflow.artifacts.executors import Arrays, _check_inputs, _SegmentIO
from tierflow.artifacts.manifest import Manifest, SegmentEntry, ValueEntry, verify_file
from tierflow.errors import ArtifactError
from tierflow.models import resolve_model
from tierflow.partition import Segment
from tierflow.partition.from_plan import split_at_exits
from tierflow.runtime.executor import Executor


def torch_executors_for(
    manifest: Manifest, entries: Sequence[SegmentEntry]
) -> dict[tuple[str, int], Executor]:
    """A :class:`TorchExecutor` per entry, by (tier, part); the model is re-split once."""
    segments = _rebuild_segments(manifest)
    return {
        (entry.tier, entry.part): TorchExecutor(entry, _load_weights(manifest, entry, segments))
        for entry in entries
    }


class TorchExecutor(_SegmentIO):
    """Runs a segment rebuilt in PyTorch: the model re-resolved from its spec, re-split with
    the stored plan, and the segment's own weights loaded from its safetensors file."""

    def __init__(self, entry: SegmentEntry, segment: Segment) -> None:
        self._entry = entry
        self._segment = segment.eval()

    def run(self, inputs: Mapping[str, NDArray[np.generic]]) -> Arrays:
        _check_inputs(self._entry, inputs)
        args = [_from_array(v, np.asarray(inputs[v.name])) for v in self._entry.inputs]
        with torch.no_grad():
            results = self._segment(*args)
        arrays: Arrays = {}
        for value, result in zip(self._entry.outputs, results, strict=True):
            if isinstance(result, torch.Tensor):
                arrays[value.name] = result.detach().cpu().numpy()
            else:
                arrays[value.name] = np.asarray(result, dtype=np.int64)
        return arrays


def _from_array(value: ValueEntry, array: NDArray[np.generic]) -> Any:
    if value.kind == "int":
        return int(array)
    if value.kind == "ints":
        return torch.Size(int(v) for v in array.tolist())
    return torch.from_numpy(np.ascontiguousarray(array))


def _rebuild_segments(manifest: Manifest) -> dict[tuple[str, int], Segment]:
    """The model's segments re-split as built, by (tier, part)."""
    plan = manifest.load_plan()
    shape = manifest.input_shapes[0] if manifest.input_shapes else None
    model, inputs = resolve_model(manifest.model, input_shape=shape)
    segments: dict[tuple[str, int], Segment] = {}
    for segment in split_at_exits(model, plan, inputs):
        part = sum(tier == segment.tier for tier, _ in segments)
        segments[segment.tier, part] = segment
    return segments


def _load_weights(
    manifest: Manifest, entry: SegmentEntry, segments: Mapping[tuple[str, int], Segment]
) -> Segment:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    segment = segments.get((entry.tier, entry.part))
    names = (tuple(v.name for v in entry.inputs), tuple(v.name for v in entry.outputs))
    if segment is None or (segment.input_names, segment.output_names) != names:
        raise ArtifactError(
            f"model {manifest.model!r} re-split with {manifest.plan_file.path} does not give "
            f"the segment built for tier {entry.label!r}; was the model code changed?"
        )
    path = verify_file(manifest.root, entry.files[0])
    try:
        state = load_file(str(path))
        segment.graph_module.load_state_dict(state, strict=True)
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise ArtifactError(f"weights file {path} does not fit tier {entry.tier!r}: {exc}") from exc
    return segment
