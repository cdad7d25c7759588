"""Export a model to ONNX and measure it in ONNX Runtime: latency, size, accuracy.

Every figure of a compressed variant comes from ONNX Runtime running the exported file,
never from PyTorch: quantised graphs only exist there, and it is what tiers run.

Note [Interleaved timing]
~~~~~~~~~~~~~~~~~~~~~~~~~
On a shared machine the load changes from second to second, so timing variant A for ten
seconds and then variant B measures the neighbours as much as the models. We time
round-robin: one run of each model in turn, ``runs`` rounds, and take each model's
median. Both see the same background load, so their *ratio* is stable even when the
absolute milliseconds are not.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from numpy.typing import NDArray
from torch import nn

from tierflow.data.dataset import ArrayDataset
from tierflow.errors import CompressionError

__all__ = ["export_onnx", "interleaved_latency_ms", "onnx_accuracy", "ort_session"]

ONNX_OPSET = 17  # the opset tierflow.artifacts exports segments with


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Export ``model`` (one input, one output) to ``path`` with a dynamic batch dimension.

    Uses the TorchScript exporter at opset 17, like ``tierflow.artifacts``; the input is
    named ``x`` and the output ``logits``.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(4, 2))
    >>> export_onnx(net, torch.zeros(1, 4), "/tmp/tiny.onnx").name
    'tiny.onnx'
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                model,
                (example,),
                str(out),
                input_names=["x"],
                output_names=["logits"],
                dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
    except Exception as exc:
        raise CompressionError(
            f"export_onnx: {type(model).__name__} cannot be exported to {out}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        model.train(was_training)
    return out


def ort_session(path: str | Path, *, threads: int = 1) -> ort.InferenceSession:
    """A CPU session with ``threads`` intra-op threads and one inter-op thread.

    One intra-op thread mimics a small end device (one core for inference) and keeps
    measurements on a shared host from competing with themselves.
    """
    if threads < 1:
        raise CompressionError(f"ort_session: threads must be >= 1, not {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only; ORT warns about unused initialisers
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_accuracy(path: str | Path, data: ArrayDataset, *, batch_size: int = 256) -> float:
    """Top-1 accuracy of the single-input ONNX model at ``path`` on ``data``, run by ORT.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> _ = export_onnx(net, torch.zeros(1, 4), "/tmp/tiny2.onnx")
    >>> data = ArrayDataset(np.zeros((3, 4), np.float32), np.zeros(3, np.int64), classes=2)
    >>> 0.0 <= onnx_accuracy("/tmp/tiny2.onnx", data) <= 1.0
    True
    """
    if len(data) == 0:
        raise CompressionError(f"onnx_accuracy: dataset {data.name!r} is empty")
    # One thread: batches of MNIST-sized models gain nothing from more on a busy host
    # (Note [One torch thread] in tierflow.torch_threads measured the same for torch).
    session = ort_session(path, threads=1)
    name = session.get_inputs()[0].name
    correct = 0
    for x, y in data.batches(batch_size):
        logits = session.run(None, {name: x})[0]
        correct += int(np.sum(np.argmax(logits, axis=1) == y))
    return correct / len(data)


def interleaved_latency_ms(
    paths: Mapping[str, str | Path],
    sample: NDArray[np.float32],
    *,
    threads: int = 1,
    warmup: int = 10,
    runs: int = 100,
) -> dict[str, float]:
    """Median single-sample latency (ms) of each ONNX model, timed round-robin.

    See Note [Interleaved timing]. ``sample`` is one input batch (usually ``[1, ...]``).

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(4, 2))
    >>> p = export_onnx(net, torch.zeros(1, 4), "/tmp/tiny3.onnx")
    >>> ms = interleaved_latency_ms({"a": p}, np.zeros((1, 4), np.float32), runs=5)
    >>> ms["a"] > 0
    True
    """
    if runs < 1 or warmup < 0:
        raise CompressionError(f"interleaved_latency_ms: runs={runs}, warmup={warmup}")
    feeds: dict[str, tuple[ort.InferenceSession, dict[str, Any]]] = {}
    for key, path in paths.items():
        session = ort_session(path, threads=threads)
        feeds[key] = (session, {session.get_inputs()[0].name: sample})
    for session, feed in feeds.values():
        for _ in range(warmup):
            session.run(None, feed)
    times: dict[str, list[float]] = {key: [] for key in feeds}
    for _ in range(runs):
        for key, (session, feed) in feeds.items():
            start = time.perf_counter()
            session.run(None, feed)
            times[key].append((time.perf_counter() - start) * 1e3)
    return {key: float(np.median(t)) for key, t in times.items()}
