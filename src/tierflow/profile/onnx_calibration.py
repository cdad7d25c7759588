"""Calibrating a PyTorch profile to the ONNX Runtime executor that tier services run.

Per-node latency is measured in PyTorch (nodes map one to one onto the graph the
planner places), but tier services run their segments in ONNX Runtime, which is faster
on CPU. Note [Executor calibration]: the whole model is exported once, its ONNX Runtime
latency measured on the same machine and thread count, interleaved with PyTorch runs of
the same model, and every node's time is scaled by the ratio of the two medians. The
scale is uniform across nodes, an approximation (ONNX Runtime fuses some ops more than
others); the testbed bench reports measured / predicted latency to show what it costs.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tierflow.errors import ProfileError
from tierflow.profile.profile import Profile
from tierflow.torch_threads import torch_threads


def _elapsed_ms(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def calibrate_to_onnxruntime(
    profile: Profile,
    model: nn.Module,
    example_inputs: Sequence[torch.Tensor],
    *,
    threads: int,
    warmup: int = 3,
    runs: int = 15,
) -> Profile:
    """Scale ``profile``'s node times to ONNX Runtime speed on this machine.

    Returns a profile whose node times are scaled by ONNX Runtime's speed relative to
    PyTorch (ratio of the fastest runs), ``whole_ms`` scaled alike, and whose meta records
    both medians and the scale (``executor: onnxruntime``).
    """
    import onnxruntime as ort  # imported here: only calibration and executors need it

    from tierflow.artifacts.build import ONNX_OPSET  # the opset tier artifacts are built with

    inputs = tuple(example_inputs)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
                torch.onnx.export(
                    model.eval(),
                    inputs,
                    str(path),
                    opset_version=ONNX_OPSET,
                    dynamo=False,
                    input_names=[f"input_{i}" for i in range(len(inputs))],
                )
        except Exception as exc:
            raise ProfileError(
                f"cannot export {profile.model} to ONNX for calibration: {exc}; "
                "profile with --executor torch instead"
            ) from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle ORT worker threads spin by default; that would steal the cores from the
        # PyTorch runs interleaved with them (and, in tier services, burn CPU quota).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    feeds = {f"input_{i}": np.asarray(x.detach().numpy()) for i, x in enumerate(inputs)}
    with torch_threads(threads), torch.inference_mode():
        for _ in range(warmup):
            session.run(None, feeds)
            model(*inputs)
        onnx_ms: list[float] = []
        torch_ms: list[float] = []
        for _ in range(runs):  # interleaved, so machine noise hits both alike
            onnx_ms.append(_elapsed_ms(lambda: session.run(None, feeds)))
            torch_ms.append(_elapsed_ms(lambda: model(*inputs)))
    onnx_whole = statistics.median(onnx_ms)
    torch_whole = statistics.median(torch_ms)
    # The executors' relative speed comes from their fastest runs: on a shared machine a
    # burst of load that lands on a few runs of one executor must not skew the ratio.
    scale = min(onnx_ms) / min(torch_ms)
    return replace(
        profile,
        node_ms={name: ms * scale for name, ms in profile.node_ms.items()},
        whole_ms=profile.whole_ms * scale,
        meta={
            **profile.meta,
            "executor": "onnxruntime",
            "torch_whole_ms": torch_whole,
            "onnxruntime_whole_ms": onnx_whole,
            "onnxruntime_scale": scale,
        },
    )
