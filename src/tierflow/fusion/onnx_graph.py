"""One exported fusion segment run by ONNX Runtime, as a runtime :class:`Executor`."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tierflow.errors import FusionError
from tierflow.runtime.executor import IOSpec

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(int64)": "int64"}


class OnnxGraph:
    """Runs one ONNX file on the CPU; specs come from the file (``-1``: dynamic dimension).

    The caller checks the file's sha256 first (:func:`tierflow.fusion.bundle.load_bundle`).
    One intra-op thread by default: a fusion segment is tiny, and several of them share a
    host in the local testbed.
    """

    def __init__(self, path: Path, *, intra_op_threads: int = 1) -> None:
        # Imported by name: onnxruntime ships no type information.
        ort: Any = importlib.import_module("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        # Idle workers spin by default and would bill the shared cores (as in artifacts/).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:
            raise FusionError(f"fusion segment {path} cannot be loaded: {error}") from error
        self.path = path
        self._inputs = tuple(_spec(node) for node in self._session.get_inputs())
        self._outputs = tuple(_spec(node) for node in self._session.get_outputs())

    @property
    def inputs(self) -> tuple[IOSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[IOSpec, ...]:
        return self._outputs

    def run(self, inputs: Mapping[str, NDArray[np.generic]]) -> dict[str, NDArray[np.generic]]:
        for spec in self._inputs:
            array = inputs.get(spec.name)
            if array is None or not spec.accepts(np.asarray(array)):
                got = "nothing" if array is None else f"{array.dtype} {list(array.shape)}"
                raise FusionError(
                    f"fusion segment {self.path.name}: tensor {spec.name!r} is {got},"
                    f" expected {spec.dtype} {list(spec.shape)}"
                )
        results = self._session.run(
            None, {s.name: np.asarray(inputs[s.name]) for s in self._inputs}
        )
        return {
            spec.name: np.asarray(result)
            for spec, result in zip(self._outputs, results, strict=True)
        }


def _spec(node: Any) -> IOSpec:
    shape = tuple(dim if isinstance(dim, int) else -1 for dim in node.shape)
    return IOSpec(node.name, shape, _ORT_DTYPES.get(node.type, node.type))
