"""Early exits on one CPU, BranchyNet's setting: the tier's own work with and without exits.

Both variants are built as single-tier artifacts and run by the runtime's
:class:`~tierflow.runtime.service.TierService` in this process (ONNX Runtime executors,
exit heads and policy, request decoding and response encoding), with no socket in
between, so the ratio is what exits save a tier's CPU per input. The two services take
turns in blocks of inputs, so load on a shared machine hits both alike.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tierflow.artifacts import build, load_manifest
from tierflow.data.dataset import ArrayDataset
from tierflow.graph.layer_graph import LayerGraph
from tierflow.plan.exit_options import PlannedExit
from tierflow.plan.planner import plan as make_plan
from tierflow.runtime import serde
from tierflow.runtime.manifest_service import service_from_manifest
from tierflow.runtime.service import TierService
from tierflow.runtime.trace import TRACE_PARAMETER, Trace
from tierflow.topology.load import topology_from_dict

_TIER = "cpu"
_BLOCK = 50  # inputs per turn
_WARMUP = 3  # untimed runs at the start of each turn
_ONE_TIER = {"tiers": [{"name": _TIER, "kind": "device", "compute": {"speed": 1.0}}], "links": []}


@dataclass(frozen=True)
class CpuExitResult:
    """Mean per-input latency on one CPU with and without exits, over the same inputs."""

    samples: int
    threads: int
    no_exit_mean_ms: float
    exit_mean_ms: float
    speedup: float
    no_exit_accuracy: float
    exit_accuracy: float
    accuracy_drop_pp: float
    exit_rates: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_cpu_speedup(
    backbone: nn.Module,
    heads: Mapping[str, nn.Module],
    inputs: tuple[torch.Tensor, ...],
    graph: LayerGraph,
    exits: Mapping[str, tuple[str, float]],
    policy: str,
    test: ArrayDataset,
    *,
    samples: int | None = None,
    threads: int = 1,
    work_dir: Path | None = None,
) -> CpuExitResult:
    """Run every test input through the model with and without exits on one CPU tier.

    Parameters
    ----------
    exits:
        ``{exit name: (backbone node, threshold)}`` of the exits switched on.
    threads:
        ONNX Runtime intra-op threads (1 mimics a small device core).
    """
    topology = topology_from_dict(_ONE_TIER, source="one CPU tier")
    plain = make_plan(graph, topology)
    with_exits = replace(
        plain,
        exits=tuple(
            PlannedExit(name, node, _TIER, policy, threshold, 0.0)
            for name, (node, threshold) in exits.items()
        ),
    )
    count = len(test) if samples is None else min(samples, len(test))
    with tempfile.TemporaryDirectory(dir=work_dir) as folder:
        services = {}
        for name, variant in (("no-exit", plain), ("exit", with_exits)):
            out = Path(folder) / name
            build(backbone, variant, inputs, out, exit_heads=heads if variant.exits else None)
            services[name] = service_from_manifest(
                load_manifest(out / "manifest.json"), _TIER, intra_op_threads=threads
            )
        input_name = services["no-exit"].inputs[0].name
        latencies: dict[str, list[float]] = {name: [] for name in services}
        correct: Counter[str] = Counter()
        taken: Counter[str] = Counter()
        # The variants take turns in blocks of inputs: turns per input would have each
        # variant evict the other's weights from the CPU caches (lenet_large's fc1 alone
        # is 14 MB) and charge both for it, while one long run per variant would let a
        # change in the machine's load favour one of them.
        for start in range(0, count, _BLOCK):
            block = range(start, min(start + _BLOCK, count))
            for name, service in services.items():
                for index in block[:_WARMUP]:
                    _infer(service, input_name, test.x[index][None])
                for index in block:
                    logits, exit_taken, spent = _infer(service, input_name, test.x[index][None])
                    latencies[name].append(spent)
                    correct[name] += int(np.argmax(logits[0]) == int(test.y[index]))
                    if name == "exit":
                        taken[exit_taken] += 1
    plain_mean = statistics.fmean(latencies["no-exit"])
    exit_mean = statistics.fmean(latencies["exit"])
    return CpuExitResult(
        samples=count,
        threads=threads,
        no_exit_mean_ms=plain_mean,
        exit_mean_ms=exit_mean,
        speedup=plain_mean / exit_mean,
        no_exit_accuracy=correct["no-exit"] / count,
        exit_accuracy=correct["exit"] / count,
        accuracy_drop_pp=(correct["no-exit"] - correct["exit"]) * 100 / count,
        exit_rates={name: hits / count for name, hits in sorted(taken.items())},
    )


def _infer(
    service: TierService, input_name: str, sample: np.ndarray
) -> tuple[np.ndarray, str, float]:
    """One request through the service: (logits, exit taken, milliseconds)."""
    request = serde.request_from_tensors(service.model, {input_name: sample})
    begin = time.perf_counter()
    response = service.infer(request)
    spent = (time.perf_counter() - begin) * 1000
    outputs = serde.tensors_from_response(response)
    trace = Trace.from_json(serde.string_parameters(response.header.parameters)[TRACE_PARAMETER])
    return np.asarray(next(iter(outputs.values()))), trace.exit, spent
