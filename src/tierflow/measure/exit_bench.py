"""`tierflow bench` for an early-exit model: accuracy, exits, latency and bytes, on the runtime.

Four deployments of one trained exit model are measured on the testbed with the same
held-out inputs, one request per input, in order:

* ``exit-aware``: the exit-aware plan (split and active exits chosen together);
* ``exit-unaware``: the placement planned for the backbone alone, with the same exits
  and thresholds switched on (what adding exits to an existing split gives);
* ``no-exit``: the backbone alone on its own optimal plan (the model without exits);
* ``raw-offload``: the backbone alone, all of it in the cloud (the raw input travels).

Accuracy, exit rates and bytes are counted from what the runtime returned and what the
emulated links carried. Latency is reported as the mean (the expectation the exit-aware
planner predicts) besides p50 / p95, since with exits the distribution is bimodal.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tierflow.artifacts import build
from tierflow.data.dataset import ArrayDataset
from tierflow.graph.layer_graph import LayerGraph
from tierflow.measure.testbed_bench import bytes_per_request, deployment_key, points_of
from tierflow.plan.exit_options import FINAL_EXIT, ExitOptions
from tierflow.plan.exit_planner import exit_unaware_plan, plan_with_exits
from tierflow.plan.plan import Plan
from tierflow.plan.planner import plan as make_plan
from tierflow.plan.sweep import SweepSpec
from tierflow.profile.profile import Profile
from tierflow.runtime.client import connect
from tierflow.testbed.bed import Testbed
from tierflow.topology.schema import Topology

Progress = Callable[[str], None]
_EXIT_MODEL_CONFIGS = ("exit-aware", "exit-unaware")


@dataclass(frozen=True)
class ExitConfigResult:
    """One deployment of the exit model (or its backbone) measured at one sweep point."""

    name: str
    sweep: Mapping[str, float] | None
    p50_ms: float
    p95_ms: float
    mean_ms: float
    throughput_rps: float
    bytes_per_link: Mapping[str, float]
    predicted_ms: float
    measured_over_predicted: float
    accuracy: float
    exit_rates: Mapping[str, float]
    requests: int
    speedup_vs_no_exit: float | None = None
    accuracy_drop_pp: float | None = None
    predicted_accuracy: float | None = None
    tiers_used: tuple[str, ...] = field(default=())
    exits: tuple[str, ...] = field(default=())
    thresholds: Mapping[str, float] = field(default_factory=dict)
    same_deployment_as: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Measured:
    latencies_ms: list[float]
    correct: int
    exits: Counter[str]
    bytes_per_link: dict[str, float]


def exit_configurations(
    graph: LayerGraph,
    topology: Topology,
    options: ExitOptions,
    profiles: Mapping[str, Profile],
    *,
    max_accuracy_drop_pp: float | None,
) -> dict[str, Plan]:
    """The four deployments compared (see the module docstring), planned under one cost model."""
    aware = plan_with_exits(
        graph,
        topology,
        options,
        tier_profiles=profiles,
        max_accuracy_drop_pp=max_accuracy_drop_pp,
    )
    backbone = make_plan(graph, topology, tier_profiles=profiles)
    movable = [n.name for n in graph.nodes if n.op != "placeholder"]
    cloud = topology.tier_names[-1]
    return {
        "exit-aware": aware,
        "exit-unaware": exit_unaware_plan(graph, topology, options, aware, tier_profiles=profiles),
        "no-exit": backbone,
        "raw-offload": make_plan(
            graph, topology, tier_profiles=profiles, pins=dict.fromkeys(movable, cloud)
        ),
    }


def run_exit_bench(
    backbone: nn.Module,
    heads: Mapping[str, nn.Module],
    inputs: tuple[torch.Tensor, ...],
    graph: LayerGraph,
    options: ExitOptions,
    raw_topology: Mapping[str, Any],
    profiles: Mapping[str, Profile],
    test: ArrayDataset,
    *,
    sweep: SweepSpec | None = None,
    samples: int | None = None,
    max_accuracy_drop_pp: float | None = None,
    emulate: bool = True,
    work_dir: Path | None = None,
    progress: Progress | None = None,
) -> list[ExitConfigResult]:
    """Deploy each configuration on the testbed and send it the held-out inputs."""
    say = progress or (lambda _: None)
    count = len(test) if samples is None else min(samples, len(test))
    x, y = test.x[:count], test.y[:count]
    results: list[ExitConfigResult] = []
    with tempfile.TemporaryDirectory(dir=work_dir) as folder:
        for index, (values, topology) in enumerate(points_of(raw_topology, sweep)):
            configs = exit_configurations(
                graph, topology, options, profiles, max_accuracy_drop_pp=max_accuracy_drop_pp
            )
            measured: dict[str, _Measured] = {}
            first_of: dict[str, str] = {}  # deployment key -> first config deployed so
            for name, config in configs.items():
                key = deployment_key(config)
                if key in first_of:  # e.g. no-exit split already on the exit's tier
                    say(f"{name} is the same deployment as {first_of[key]}")
                    measured[name] = measured[first_of[key]]
                    continue
                first_of[key] = name
                out = Path(folder) / f"{index}-{name}"
                say(f"building {name}: {_describe(config)}")
                build(backbone, config, inputs, out, exit_heads=heads if config.exits else None)
                with Testbed(topology, out / "manifest.json", emulate=emulate) as bed:
                    say(f"measuring {name} on {count} held-out inputs")
                    measured[name] = _measure(bed, x, y)
            same = {name: first_of[deployment_key(c)] for name, c in configs.items()}
            results += _summarise(configs, measured, values, same)
    return results


def _describe(plan: Plan) -> str:
    where = ", ".join(f"{tier}: {len(nodes)} nodes" for tier, nodes in plan.segments().items())
    exits = ", ".join(f"{e.name}@{e.tier} ≥ {e.threshold:.3f}" for e in plan.exits)
    return where + (f"; exits {exits}" if exits else "; no exits")


def _measure(bed: Testbed, x: np.ndarray, y: np.ndarray) -> _Measured:
    """Send the inputs back to back, as the in-tier profiles do (Note [back to back]).

    Note [back to back]
        A tier's speed is emulated by a CFS quota, which caps CPU per 10 ms period; it
        does not slow a request that fits in what is left of the period. Requests sent
        back to back keep a slow tier's quota spent, as a device under sustained load
        would; with idle gaps between them (tried: a random pause of up to one period)
        the quota refills and short requests run at host speed (the exit deployment
        measured 1.6 and 3.6 ms mean instead of 4-10 ms). Profiles are measured back to
        back too, so prediction and measurement describe the same regime.
    """
    latencies: list[float] = []
    exits: Counter[str] = Counter()
    correct = 0
    with connect(bed.entry, timeout_s=120.0) as client:
        for sample in x[:5]:  # warm-up: sessions, connections, emulator buffers, caches
            client.infer(sample[None])
        before = bed.link_stats()
        for sample, label in zip(x, y, strict=True):
            begin = time.perf_counter()
            result = client.infer(sample[None])
            latencies.append((time.perf_counter() - begin) * 1000)
            correct += int(np.argmax(result.output[0]) == label)
            exits[FINAL_EXIT if result.trace is None else result.trace.exit] += 1
        after = bed.link_stats()
    return _Measured(latencies, correct, exits, bytes_per_request(before, after, len(latencies)))


def _summarise(
    configs: Mapping[str, Plan],
    measured: Mapping[str, _Measured],
    sweep: Mapping[str, float] | None,
    same: Mapping[str, str],
) -> list[ExitConfigResult]:
    reference = measured["no-exit"]
    reference_mean = statistics.fmean(reference.latencies_ms)
    reference_accuracy = reference.correct / len(reference.latencies_ms)
    results = []
    for name, config in configs.items():
        m = measured[name]
        n = len(m.latencies_ms)
        mean = statistics.fmean(m.latencies_ms)
        accuracy = m.correct / n
        predicted = config.predicted.latency_ms
        # The exit model's deployments report against the model without exits even when
        # the planner switched every exit off (the saving is then the planner's verdict).
        with_exits = name in _EXIT_MODEL_CONFIGS
        results.append(
            ExitConfigResult(
                name=name,
                sweep=sweep,
                p50_ms=statistics.median(m.latencies_ms),
                p95_ms=float(np.percentile(m.latencies_ms, 95)),
                mean_ms=mean,
                throughput_rps=1000.0 / mean,  # sequential: one request at a time
                bytes_per_link=m.bytes_per_link,
                predicted_ms=predicted,
                measured_over_predicted=mean / predicted if predicted > 0 else float("nan"),
                accuracy=accuracy,
                exit_rates={exit: hits / n for exit, hits in sorted(m.exits.items())},
                requests=n,
                speedup_vs_no_exit=reference_mean / mean if with_exits else None,
                accuracy_drop_pp=(reference_accuracy - accuracy) * 100 if with_exits else None,
                predicted_accuracy=config.accuracy,
                tiers_used=tuple(config.segments()),
                exits=tuple(f"{e.name}@{e.tier}" for e in config.exits),
                thresholds={e.name: e.threshold for e in config.exits},
                same_deployment_as=None if same[name] == name else same[name],
            )
        )
    return results


def exit_results_to_json(results: Sequence[ExitConfigResult]) -> dict[str, Any]:
    return {"configs": [r.to_dict() for r in results]}
