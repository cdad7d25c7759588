"""Executors for built segments (ONNX Runtime, PyTorch) and running them in a chain.

Both check their files' sha256 against the manifest before reading them.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tierflow.artifacts.manifest import Manifest, SegmentEntry, verify_file
from tierflow.errors import ArtifactError
from tierflow.runtime.executor import Executor, IOSpec

Arrays = dict[str, NDArray[np.generic]]


def _check_inputs(entry: SegmentEntry, inputs: Mapping[str, NDArray[np.generic]]) -> None:
    for value in entry.inputs:
        if value.name not in inputs:
            raise ArtifactError(f"segment for tier {entry.tier!r} needs input {value.name!r}")
        array = np.asarray(inputs[value.name])
        if not value.spec.accepts(array):
            raise ArtifactError(
                f"segment for tier {entry.tier!r}: input {value.name!r} is {array.dtype} "
                f"{tuple(array.shape)}, expected {value.dtype} {value.shape} (-1: any size)"
            )


class _SegmentIO:
    """Tier and tensor specs of a built segment, read from its manifest entry."""

    _entry: SegmentEntry

    @property
    def tier(self) -> str:
        return self._entry.tier

    # Cached: a tier service reads them on every request, and the entry never changes.
    @functools.cached_property
    def inputs(self) -> tuple[IOSpec, ...]:
        return tuple(v.spec for v in self._entry.inputs)

    @functools.cached_property
    def outputs(self) -> tuple[IOSpec, ...]:
        return tuple(v.spec for v in self._entry.outputs)


class OnnxExecutor(_SegmentIO):
    """Runs an ONNX segment with ONNX Runtime on the CPU; takes and returns numpy arrays.

    Parameters
    ----------
    root:
        The artifact directory.
    entry:
        The segment's manifest entry; its file's sha256 is checked before loading.
    intra_op_threads:
        ONNX Runtime's intra-op thread count; ``None`` lets it choose.
    """

    def __init__(
        self, root: Path, entry: SegmentEntry, *, intra_op_threads: int | None = None
    ) -> None:
        # Imported by name: onnxruntime ships no type information.
        ort: Any = importlib.import_module("onnxruntime")

        if entry.executor != "onnx" or len(entry.files) != 1:
            raise ArtifactError(f"segment for tier {entry.tier!r} is not one ONNX file")
        path = verify_file(root, entry.files[0])
        options = ort.SessionOptions()
        if intra_op_threads is not None:
            options.intra_op_num_threads = intra_op_threads
        # Idle ONNX Runtime workers spin by default; under a tier's CPU quota that spinning
        # is billed as work and slows the segment, and calibration measures without it.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._entry = entry
        self._session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        # Inputs the exporter folded away (unused by the graph) are not fed.
        self._feeds = tuple(i.name for i in self._session.get_inputs())

    def run(self, inputs: Mapping[str, NDArray[np.generic]]) -> Arrays:
        _check_inputs(self._entry, inputs)
        feeds = {name: np.asarray(inputs[name]) for name in self._feeds}
        results = self._session.run(None, feeds)
        # Outputs by position: a value passed through is renamed NAME:out in the file.
        return {
            value.name: np.asarray(result)
            for value, result in zip(self._entry.outputs, results, strict=True)
        }


def load_executors(
    manifest: Manifest, tier: str | None = None, *, intra_op_threads: int | None = None
) -> list[Executor]:
    """Executors for ``tier``'s segments (every segment when ``None``), in the order they run.

    A tier cut at early exits has several segments; its exits' heads are loaded by
    :func:`~tierflow.artifacts.exit_heads.load_tier_exits`, not here.

    Every file is checked against the manifest's sha256 before it is read.

    Raises
    ------
    ArtifactError
        If a file is missing or its digest differs (naming the file and both digests),
        or the model spec no longer splits into the segments that were built.

    Examples
    --------
    >>> executors = load_executors(load_manifest("build/"))  # doctest: +SKIP
    >>> run_chain(executors, {"x": x})  # doctest: +SKIP
    """
    entries = [e for e in manifest.segments if tier is None or e.tier == tier]
    if tier is not None and not entries:
        manifest.segment(tier)  # raises, naming the tiers there are
    for entry in entries:
        for file in entry.files:
            verify_file(manifest.root, file)
    executors: list[Executor] = []
    torch_entries = [e for e in entries if e.executor == "torch"]
    torch_executors: dict[tuple[str, int], Executor] = {}
    if torch_entries:
        # PyTorch only where a segment needs it (Note [Lazy public names] in tierflow).
        from tierflow.artifacts.torch_executor import torch_executors_for

        torch_executors = torch_executors_for(manifest, torch_entries)
    for entry in entries:
        if entry.executor == "onnx":
            executors.append(OnnxExecutor(manifest.root, entry, intra_op_threads=intra_op_threads))
        else:
            executors.append(torch_executors[entry.tier, entry.part])
    return executors


def run_chain(executors: Sequence[Executor], inputs: Mapping[str, NDArray[np.generic]]) -> Arrays:
    """Run executors in tier order, passing values by name; return the chain's outputs.

    The outputs are the values no later executor consumes (for a whole built plan, the
    model's outputs), as :meth:`tierflow.SplitModel.from_segments` defines them.

    Raises
    ------
    ArtifactError
        If an executor needs a value that neither ``inputs`` nor an earlier one provides.
    """
    env: dict[str, NDArray[np.generic]] = dict(inputs)
    produced: list[str] = []
    for position, executor in enumerate(executors):
        missing = [s.name for s in executor.inputs if s.name not in env]
        if missing:
            raise ArtifactError(
                f"executor {position} needs {missing[0]!r}, which no input or earlier "
                "executor provides (executors out of order?)"
            )
        results = executor.run({s.name: env[s.name] for s in executor.inputs})
        env.update(results)
        later = {s.name for e in executors[position + 1 :] for s in e.inputs}
        produced += [name for name in results if name not in later]
    return {name: env[name] for name in produced}
