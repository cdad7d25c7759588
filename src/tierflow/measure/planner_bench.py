"""``make bench`` for the core: planner solve times and profile additivity."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial

from tierflow.graph.layer_graph import LayerGraph
from tierflow.measure.synthetic import Shape, synthetic_graph
from tierflow.plan import milp
from tierflow.plan.cost_model import build_cost_model
from tierflow.plan.objective import Objective
from tierflow.plan.planner import plan
from tierflow.profile.tier_latency import tier_latency_ms
from tierflow.topology import Topology, topology_from_dict

#: A three-tier topology for solver timing (camera → gateway → datacenter).
BENCH_TOPOLOGY: dict[str, object] = {
    "tiers": [
        {"name": "camera", "kind": "device", "compute": {"speed": 0.1}},
        {"name": "gateway", "kind": "edge", "compute": {"speed": 0.5}},
        {"name": "datacenter", "kind": "cloud", "compute": {"speed": 4.0}},
    ],
    "links": [
        {"from": "camera", "to": "gateway", "bandwidth_mbps": 20, "rtt_ms": 5},
        {"from": "gateway", "to": "datacenter", "bandwidth_mbps": 10, "rtt_ms": 40},
    ],
}


@dataclass(frozen=True)
class SolveTiming:
    shape: str  # chain, dag, or dag+memory (tier memory limits make it a true MILP)
    nodes: int
    plan_ms: float  # whole plan(): cost model, solve, baselines
    solve_ms: float  # the optimal placement alone
    mip_only_ms: float  # the same program solved as a MILP directly (no LP-first)
    method: str
    lp_first_speedup: float


def _median_ms(action: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def time_planner(
    sizes: Sequence[int] = (50, 200, 500, 1000),
    shapes: Sequence[Shape] = ("chain", "dag"),
    *,
    repeats: int = 3,
    topology: Topology | None = None,
) -> list[SolveTiming]:
    """Median wall time of ``plan()`` on synthetic graphs of each size and shape."""
    topology = topology or topology_from_dict(BENCH_TOPOLOGY)
    objective = Objective.parse("latency")
    results = []
    cases: list[tuple[str, Shape, bool]] = [(s, s, False) for s in shapes] + [
        ("dag+memory", "dag", True)
    ]
    for label, shape, limited in cases:
        for size in sizes:
            graph, profile = synthetic_graph(size, shape=shape, seed=size)
            topo = _memory_limited(topology, graph) if limited else topology
            result = plan(graph, topo, profile=profile)  # warm-up, and the method used
            plan_ms = _median_ms(partial(plan, graph, topo, profile=profile), repeats)
            cost = build_cost_model(graph, topo, tier_latency_ms(graph, topo, host=profile))
            solve_ms = _median_ms(partial(milp.solve, cost, objective), repeats)
            mip_ms = _median_ms(partial(milp.solve, cost, objective, lp_first=False), repeats)
            results.append(
                SolveTiming(
                    shape=label,
                    nodes=size,
                    plan_ms=round(plan_ms, 2),
                    solve_ms=round(solve_ms, 2),
                    mip_only_ms=round(mip_ms, 2),
                    method=str(result.solver.get("method", "")),
                    lp_first_speedup=round(mip_ms / solve_ms, 2),
                )
            )
    return results


def _memory_limited(topology: Topology, graph: LayerGraph) -> Topology:
    """The topology with the first two tiers holding 30% and 60% of the parameters."""
    params_mb = graph.total_param_bytes / 2**20
    tiers = list(topology.tiers)
    for index, share in ((0, 0.3), (1, 0.6)):
        tiers[index] = tiers[index].model_copy(update={"memory_mb": params_mb * share})
    return topology.model_copy(update={"tiers": tuple(tiers)})


def timings_to_dicts(timings: Sequence[SolveTiming]) -> list[dict[str, object]]:
    return [asdict(t) for t in timings]
