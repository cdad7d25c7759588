"""`tierflow bench`: plans and baselines deployed on the testbed, measured against prediction.

For each sweep point the planner's plan and the ``all-<tier>`` baselines (``all-<cloud>``
is raw input offloaded to the cloud) are built, run as tier services behind emulated
links, and timed end to end. Deployments are built and started once and reused across
sweep points: only the links change between points, live.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from tierflow.artifacts import build
from tierflow.errors import InfeasiblePlanError
from tierflow.graph.layer_graph import LayerGraph
from tierflow.plan.codec_options import CodecOptions
from tierflow.plan.plan import Plan
from tierflow.plan.planner import plan as make_plan
from tierflow.plan.sweep import SweepSpec
from tierflow.plan.variant_options import VariantOptions
from tierflow.plan.variant_planner import plan_compressed
from tierflow.profile.profile import Profile
from tierflow.runtime.client import connect
from tierflow.testbed.bed import Testbed
from tierflow.topology.load import apply_overrides, topology_from_dict
from tierflow.topology.schema import Topology

if TYPE_CHECKING:  # the link module is imported lazily (tierflow.testbed)
    from tierflow.testbed.link import LinkStats


@dataclass(frozen=True)
class ConfigResult:
    """One deployment measured at one sweep point."""

    name: str
    sweep: Mapping[str, float] | None
    p50_ms: float
    p95_ms: float
    throughput_rps: float
    bytes_per_link: Mapping[str, float]
    predicted_ms: float
    measured_over_predicted: float
    requests: int
    same_deployment_as: str | None = None
    tiers_used: tuple[str, ...] = field(default=())
    accuracy: float | None = None  # on the bench's labelled samples, through the testbed
    variants: Mapping[str, str] = field(default_factory=dict)  # the plan's tier_variants
    link_codecs: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # the plan's

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BenchSettings:
    requests: int = 20  # timed sequential requests per configuration (at most)
    min_requests: int = 5  # ... and at least, whatever the time budget says
    seconds_per_config: float = 8.0  # time budget for the sequential phase
    pipelined_in_flight: int = 4
    warmup: int = 2


Progress = Callable[[str], None]


def points_of(
    raw: Mapping[str, Any], sweep: SweepSpec | None
) -> list[tuple[dict[str, float] | None, Topology]]:
    if sweep is None:
        return [(None, topology_from_dict(raw))]
    points: list[tuple[dict[str, float] | None, Topology]] = []
    for value in sweep.values:
        changed = apply_overrides(raw, [f"{sweep.path}={value!r}"])
        points.append(
            ({sweep.path: value}, topology_from_dict(changed, source=f"{sweep.path}={value:g}"))
        )
    return points


@dataclass(frozen=True)
class CompressionChoice:
    """Measured options the compressed configuration may use, and its accuracy budget.

    With codecs only, the configuration is ``plan+codecs``; with variants (and codecs, if
    given) it is ``plan+compressed``. ``calibration`` (model inputs) builds int8-static
    tiers.
    """

    max_accuracy_drop_pp: float
    codecs: CodecOptions | None = None
    variants: VariantOptions | None = None
    calibration: torch.Tensor | None = None

    @property
    def name(self) -> str:
        return "plan+codecs" if self.variants is None else "plan+compressed"


@dataclass(frozen=True)
class LabelledSamples:
    """Inputs and labels sent through every deployment to measure its accuracy."""

    x: np.ndarray
    y: np.ndarray
    batch: int = 50


def configurations(
    graph: LayerGraph,
    topology: Topology,
    profiles: Mapping[str, Profile],
    compression: CompressionChoice | None = None,
    *,
    baselines: bool = True,
) -> dict[str, Plan]:
    """The plan, the compressed plan when options are given, and (with ``baselines``)
    every all-on-one-tier baseline, each planned under the same costs."""
    configs = {"plan": make_plan(graph, topology, tier_profiles=profiles)}
    if compression is not None:
        configs[compression.name] = plan_compressed(
            graph,
            topology,
            variants=compression.variants,
            codecs=compression.codecs,
            tier_profiles=profiles,
            max_accuracy_drop_pp=compression.max_accuracy_drop_pp,
        )
    movable = [n.name for n in graph.nodes if n.op != "placeholder"]
    for tier in topology.tier_names if baselines else ():
        pins = dict.fromkeys(movable, tier)
        try:
            configs[f"all-{tier}"] = make_plan(graph, topology, tier_profiles=profiles, pins=pins)
        except InfeasiblePlanError:
            continue  # e.g. the model does not fit in the tier's memory: nothing to deploy
    return configs


def deployment_key(plan: Plan) -> str:
    """Equal for plans that deploy the same segments, exits, link codecs and variants."""
    codecs = sorted((tier, sorted(values.items())) for tier, values in plan.link_codecs.items())
    exits = sorted((e.name, e.node, e.tier, e.policy, e.threshold) for e in plan.exits)
    variants = sorted(plan.tier_variants.items())
    identity = json.dumps([sorted(plan.assignment.items()), codecs, exits, variants])
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def bytes_per_request(
    before: Mapping[str, LinkStats], after: Mapping[str, LinkStats], requests: int
) -> dict[str, float]:
    """Bytes each link carried (both ways) per request between two snapshots."""
    return {
        name: (after[name].bytes_up + after[name].bytes_down - s.bytes_up - s.bytes_down) / requests
        for name, s in before.items()
    }


def run_bench(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    graph: LayerGraph,
    raw_topology: Mapping[str, Any],
    profiles: Mapping[str, Profile],
    *,
    sweep: SweepSpec | None,
    settings: BenchSettings,
    work_dir: Path | None = None,
    emulate: bool = True,
    progress: Progress | None = None,
    compression: CompressionChoice | None = None,
    labelled: LabelledSamples | None = None,
    baselines: bool = True,
) -> list[ConfigResult]:
    """Measure the plan (compressed too, when options are given) and, with ``baselines``,
    the all-on-one-tier baselines at every sweep point; with ``labelled`` samples, each
    deployment's accuracy as well."""
    say = progress or (lambda _: None)
    points = points_of(raw_topology, sweep)
    planned = [
        (values, topo, configurations(graph, topo, profiles, compression, baselines=baselines))
        for values, topo in points
    ]
    deployments: dict[str, Plan] = {}
    for _, _, configs in planned:
        for config in configs.values():
            deployments.setdefault(deployment_key(config), config)
    request = np.asarray(inputs[0].detach().numpy())
    measured: dict[tuple[str, int], tuple[float, float, float, dict[str, float]]] = {}
    accuracy: dict[str, float] = {}
    calibration = None if compression is None else compression.calibration
    with tempfile.TemporaryDirectory(dir=work_dir) as folder:
        for key, deployment in deployments.items():
            out = Path(folder) / key
            say(f"building {len(deployment.segments())} segment(s) for deployment {key[:8]}")
            build(
                model,
                deployment,
                inputs,
                out,
                calibration=None if calibration is None else (calibration,),
            )
            with Testbed(points[0][1], out / "manifest.json", emulate=emulate) as bed:
                if labelled is not None:
                    say(f"measuring the accuracy of deployment {key[:8]}")
                    accuracy[key] = _accuracy(bed, labelled)
                for index, (_, topo, configs) in enumerate(planned):
                    if not any(deployment_key(c) == key for c in configs.values()):
                        continue
                    for link_index, link in enumerate(topo.links if emulate else ()):
                        bed.set_link(
                            link_index,
                            bandwidth_mbps=link.bandwidth_mbps,
                            downlink_mbps=link.down_mbps,
                            rtt_ms=link.rtt_ms,
                        )
                    say(f"measuring deployment {key[:8]} at point {index + 1}/{len(planned)}")
                    measured[(key, index)] = _measure(bed, request, settings)
    results = []
    for index, (values, _, configs) in enumerate(planned):
        first_name: dict[str, str] = {}
        for name, config in configs.items():
            key = deployment_key(config)
            p50, p95, rps, per_link = measured[(key, index)]
            predicted = config.predicted.latency_ms
            results.append(
                ConfigResult(
                    name=name,
                    sweep=values,
                    p50_ms=p50,
                    p95_ms=p95,
                    throughput_rps=rps,
                    bytes_per_link=per_link,
                    predicted_ms=predicted,
                    measured_over_predicted=p50 / predicted if predicted > 0 else float("nan"),
                    requests=settings.requests,
                    same_deployment_as=first_name.get(key),
                    tiers_used=tuple(config.segments()),
                    accuracy=accuracy.get(key),
                    variants=dict(config.tier_variants),
                    link_codecs={t: dict(c) for t, c in config.link_codecs.items()},
                )
            )
            first_name.setdefault(key, name)
    return results


def _accuracy(bed: Testbed, labelled: LabelledSamples) -> float:
    """Top-1 accuracy of the deployment on the labelled samples, batch by batch.

    Accuracy does not depend on the links, and batches cross them at the first point's
    settings; the links are set per point only afterwards, for timing.
    """
    correct = 0
    with connect(bed.entry, timeout_s=120.0) as client:
        for start in range(0, len(labelled.x), labelled.batch):
            logits = client.infer(labelled.x[start : start + labelled.batch]).output
            predicted = np.argmax(logits, axis=1)
            correct += int(np.sum(predicted == labelled.y[start : start + labelled.batch]))
    return correct / len(labelled.x)


def _measure(
    bed: Testbed, request: np.ndarray, settings: BenchSettings
) -> tuple[float, float, float, dict[str, float]]:
    """p50 / p95 latency of sequential requests, pipelined throughput, bytes per request."""
    with connect(bed.entry, timeout_s=120.0) as client:
        for _ in range(settings.warmup):
            client.infer(request)
        before = bed.link_stats()
        latencies: list[float] = []
        started = time.perf_counter()
        while len(latencies) < settings.requests:
            begin = time.perf_counter()
            client.infer(request)
            latencies.append((time.perf_counter() - begin) * 1000)
            spent = time.perf_counter() - started
            if len(latencies) >= settings.min_requests and spent > settings.seconds_per_config:
                break
        after = bed.link_stats()
        count = len(latencies)
        per_link = bytes_per_request(before, after, count)
        batch = max(settings.min_requests, min(count, 2 * settings.pipelined_in_flight))
        begin = time.perf_counter()
        for _ in client.infer_many([request] * batch, max_in_flight=settings.pipelined_in_flight):
            pass
        throughput = batch / (time.perf_counter() - begin)
    p95 = float(np.percentile(latencies, 95))
    return statistics.median(latencies), p95, throughput, per_link


def results_to_json(results: Sequence[ConfigResult]) -> dict[str, Any]:
    return {"configs": [r.to_dict() for r in results]}
