"""Random planning instances and a brute-force planner, for checking the solver."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from hypothesis import strategies as st

from tierflow.plan.cost_model import CostModel
from tierflow.plan.evaluate import Prediction, evaluate, link_weights
from tierflow.plan.objective import Objective


def random_cost_model(
    rng: np.random.Generator,
    *,
    n_nodes: int,
    n_tiers: int,
    memory: bool = False,
    private: bool = False,
    pins: int = 0,
    slo: bool = False,
    power: bool = True,
) -> CostModel:
    """A random DAG (node 0 is the input) with random costs and optional constraints."""
    src: list[int] = []
    dst: list[int] = []
    for node in range(1, n_nodes):
        k = int(rng.integers(1, min(node, 3) + 1))
        for producer in rng.choice(node, size=k, replace=False):
            src.append(int(producer))
            dst.append(node)
    users = np.bincount(src, minlength=n_nodes)
    sinks = np.flatnonzero(users == 0)
    outputs = sinks if rng.random() < 0.5 else sinks[-1:]
    # Later tiers compute faster, as from device to cloud.
    base = rng.uniform(0.1, 10.0, size=n_nodes)
    speed = np.sort(rng.uniform(0.2, 8.0, size=n_tiers))
    compute = base[:, None] / speed[None, :] * rng.uniform(0.7, 1.3, size=(n_nodes, n_tiers))
    compute[0] = 0.0
    out_bytes = rng.choice([1e3, 1e4, 5e4, 2e5, 1e6], size=n_nodes) * rng.uniform(0.5, 1.5, n_nodes)
    param_bytes = rng.uniform(0, 2e6, size=n_nodes)
    param_bytes[0] = 0.0
    work = out_bytes.copy()
    np.add.at(work, dst, out_bytes[src])
    allowed = np.ones((n_nodes, n_tiers), dtype=bool)
    allowed[0, 1:] = False
    for node in rng.choice(np.arange(1, n_nodes), size=min(pins, n_nodes - 1), replace=False):
        allowed[node] = False
        allowed[node, rng.integers(n_tiers)] = True
    links = n_tiers - 1
    memory_bytes = np.full(n_tiers, np.inf)
    if memory:
        total = param_bytes.sum() + work.max()
        memory_bytes[: max(1, n_tiers - 1)] = rng.uniform(0.2, 0.9, max(1, n_tiers - 1)) * total
    private_nodes = np.array(sorted({d for s, d in zip(src, dst, strict=True) if s == 0}))
    total_compute = compute[:, 0].sum()
    return CostModel(
        node_names=tuple(f"n{i}" for i in range(n_nodes)),
        tier_names=tuple(f"t{i}" for i in range(n_tiers)),
        link_names=tuple(f"t{i}->t{i + 1}" for i in range(links)),
        compute_ms=compute,
        out_bytes=out_bytes,
        param_bytes=param_bytes,
        work_bytes=work,
        edge_src=np.array(src, dtype=np.int64),
        edge_dst=np.array(dst, dtype=np.int64),
        input_nodes=np.array([0], dtype=np.int64),
        output_nodes=np.array(outputs, dtype=np.int64),
        allowed=allowed,
        private_nodes=private_nodes if private else np.zeros(0, dtype=np.int64),
        up_ms_per_byte=8.0 / (rng.uniform(0.5, 100.0, links) * 1e3),
        down_ms_per_byte=8.0 / (rng.uniform(0.5, 100.0, links) * 1e3),
        rtt_ms=rng.uniform(0.0, 60.0, links),
        service_ms=rng.uniform(0.0, 5.0, n_tiers),
        link_weight=rng.uniform(0.1, 3.0, links),
        memory_bytes=memory_bytes,
        active_w=float(rng.uniform(0.5, 4.0)) if power else None,
        idle_w=float(rng.uniform(0.05, 1.0)) if power else None,
        transmit_w=float(rng.uniform(0.2, 2.5)) if power else None,
        slo_ms=float(rng.uniform(0.3, 1.2) * total_compute) if slo else None,
    )


def monotone_assignments(cost: CostModel) -> Iterator[np.ndarray]:
    """Every assignment in which data only flows up the tier order."""
    producers: list[list[int]] = [[] for _ in range(cost.n_nodes)]
    for s, d in zip(cost.edge_src, cost.edge_dst, strict=True):
        producers[int(d)].append(int(s))
    tiers = np.zeros(cost.n_nodes, dtype=np.int64)

    def place(node: int) -> Iterator[np.ndarray]:
        if node == cost.n_nodes:
            yield tiers.copy()
            return
        lowest = max((int(tiers[p]) for p in producers[node]), default=0)
        for tier in range(lowest, cost.n_tiers):
            tiers[node] = tier
            yield from place(node + 1)

    yield from place(0)


def brute_force(cost: CostModel, objective: Objective) -> tuple[float, Prediction] | None:
    """Lowest objective value over all feasible assignments, or None if none is feasible."""
    weights = link_weights(cost)
    best: tuple[float, Prediction] | None = None
    for tiers in monotone_assignments(cost):
        prediction = evaluate(cost, tiers)
        if not prediction.feasible:
            continue
        value = prediction.cost(objective, weights)
        if best is None or value < best[0]:
            best = (value, prediction)
    return best


objectives = st.sampled_from(
    [
        "latency",
        "energy",
        "bytes",
        "throughput",
        "latency=1,energy=0.5",
        "latency=0.3,bytes=2,throughput=1",
    ]
)
