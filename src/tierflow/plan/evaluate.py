"""Predicting what an assignment costs, straight from the cost model's definition.

The solver optimises a linear encoding of the same quantities; this module computes
them directly from an assignment, so the two can check each other (tests compare the
solver with brute-force enumeration scored here). Formulas: docs/concepts.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tierflow.plan.cost_model import BYTES_PER_MB, BoolArray, CostModel, FloatArray, IntArray
from tierflow.plan.objective import Objective


@dataclass(frozen=True)
class Prediction:
    """Predicted cost of one assignment for one input.

    When the cost model has early exits (:attr:`CostModel.expected`), every figure is the
    expectation over inputs, and the throughput is that of the expected busy times.

    Attributes
    ----------
    latency_ms:
        End to end: compute on every tier, transfers up the links, one round trip per
        link in use, and the output's return to the first tier.
    energy_mj:
        Energy of the first tier (compute, transmit and idle waiting), ``None`` when the
        topology gives it no power figures.
    bytes_per_link:
        Bytes crossing each link per input, both directions.
    throughput_rps:
        Inputs per second when requests are pipelined: 1000 / the slowest stage's ms.
    compute_ms:
        Compute time per tier.
    transfer_ms:
        Transfer time per link (up and down, excluding propagation delay).
    feasible:
        Whether every constraint holds; ``violations`` says which do not.
    """

    latency_ms: float
    energy_mj: float | None
    bytes_per_link: Mapping[str, float]
    throughput_rps: float
    compute_ms: Mapping[str, float]
    transfer_ms: Mapping[str, float]
    feasible: bool = True
    violations: tuple[str, ...] = field(default=())

    @property
    def period_ms(self) -> float:
        return 1000.0 / self.throughput_rps if self.throughput_rps > 0 else float("inf")

    def cost(self, objective: Objective, link_weight: Mapping[str, float]) -> float:
        """Value of ``objective`` for this prediction, in the objective's units."""
        total = 0.0
        for criterion, weight in objective.weights:
            if weight == 0:
                continue
            if criterion == "latency":
                total += weight * self.latency_ms
            elif criterion == "energy":
                total += weight * (self.energy_mj if self.energy_mj is not None else np.nan)
            elif criterion == "bytes":
                weighted = sum(link_weight[k] * b for k, b in self.bytes_per_link.items())
                total += weight * weighted / BYTES_PER_MB
            else:
                total += weight * self.period_ms
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "energy_mj": self.energy_mj,
            "bytes_per_link": dict(self.bytes_per_link),
            "throughput_rps": self.throughput_rps,
            "compute_ms": dict(self.compute_ms),
            "transfer_ms": dict(self.transfer_ms),
            "feasible": self.feasible,
            "violations": list(self.violations),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Prediction:
        energy = data.get("energy_mj")
        return cls(
            latency_ms=float(data["latency_ms"]),
            energy_mj=None if energy is None else float(energy),
            bytes_per_link={str(k): float(v) for k, v in data["bytes_per_link"].items()},
            throughput_rps=float(data["throughput_rps"]),
            compute_ms={str(k): float(v) for k, v in data["compute_ms"].items()},
            transfer_ms={str(k): float(v) for k, v in data["transfer_ms"].items()},
            feasible=bool(data.get("feasible", True)),
            violations=tuple(str(v) for v in data.get("violations", ())),
        )


def link_weights(cost: CostModel) -> dict[str, float]:
    return dict(zip(cost.link_names, (float(w) for w in cost.link_weight), strict=True))


def evaluate(cost: CostModel, tiers: IntArray, codecs: IntArray | None = None) -> Prediction:
    """Predict the cost of running node ``i`` on tier ``tiers[i]`` for every node.

    ``tiers`` must send data only upward (producers never above consumers); anything
    else is not a valid placement and raises ``ValueError``. With early exits in ``cost``
    the result is the expected cost over inputs.

    ``codecs[n, l]`` (shape ``[N, L]``) is the codec candidate of ``cost`` that compresses
    node ``n``'s value on link ``l``, or -1 for raw bytes (``None``: all raw). A candidate
    may only compress its own value on a link that value crosses, else ``ValueError``.
    Encode and decode times count as compute of the sending and receiving tiers.
    """
    tiers = np.asarray(tiers, dtype=np.int64)
    n_links = cost.n_tiers - 1
    if np.any(tiers[cost.edge_src] > tiers[cost.edge_dst]):
        raise ValueError("assignment sends data down the tier order")
    if cost.expected and codecs is not None and np.any(np.asarray(codecs) >= 0):
        raise ValueError("activation codecs cannot be evaluated together with early exits")

    if cost.expected:
        compute, up, down, used = _expected_flows(cost, tiers)
    else:
        compute = np.asarray(
            np.bincount(
                tiers,
                weights=cost.compute_ms[np.arange(cost.n_nodes), tiers],
                minlength=cost.n_tiers,
            ),
            dtype=np.float64,
        )
        # A value crosses every link between its producer and its highest consumer, once.
        highest_user = tiers.copy()
        np.maximum.at(highest_user, cost.edge_src, tiers[cost.edge_dst])
        links = np.arange(n_links)
        crosses = (tiers[:, None] <= links) & (highest_user[:, None] > links)  # [N, L]
        up = cost.out_bytes @ crosses
        returns = tiers[cost.output_nodes, None] > links  # outputs travel back down
        down = cost.out_bytes[cost.output_nodes] @ returns
        top = tiers.max() if cost.n_nodes else 0
        used = (links < top).astype(np.float64)
        if codecs is not None:
            compute, up = _with_codecs(cost, crosses, np.asarray(codecs), compute, up)
    up_ms = up * cost.up_ms_per_byte
    down_ms = down * cost.down_ms_per_byte
    # Tier l+1 is on the request's path exactly when link l is used; tier 0 always is.
    service = cost.service_ms * np.concatenate([[1.0], used])
    latency = float(
        compute.sum() + service.sum() + (used * cost.rtt_ms).sum() + up_ms.sum() + down_ms.sum()
    )

    energy: float | None = None
    if cost.has_power:
        assert cost.active_w is not None and cost.idle_w is not None
        assert cost.transmit_w is not None
        radio_ms = float(up_ms[0] + down_ms[0]) if n_links else 0.0
        busy = float(compute[0] + service[0]) + radio_ms
        energy = cost.active_w * (compute[0] + service[0]) + cost.transmit_w * radio_ms
        energy += cost.idle_w * (latency - busy)  # W · ms = mJ

    stages = np.concatenate([compute + service, up_ms, down_ms])
    period = float(stages.max()) if stages.size else 0.0

    violations = _violations(cost, tiers, latency)
    drop = codec_drop_pp(cost, codecs)
    budget = cost.max_codec_drop_pp
    if budget is not None and drop > budget + 1e-9 * max(1.0, budget):
        violations.append(f"accuracy budget: codecs drop {drop:g} pp > {budget:g} pp")
    return Prediction(
        latency_ms=latency,
        energy_mj=None if energy is None else float(energy),
        bytes_per_link={name: float(up[i] + down[i]) for i, name in enumerate(cost.link_names)},
        throughput_rps=1000.0 / period if period > 0 else float("inf"),
        compute_ms={name: float(compute[i]) for i, name in enumerate(cost.tier_names)},
        transfer_ms={name: float(up_ms[i] + down_ms[i]) for i, name in enumerate(cost.link_names)},
        feasible=not violations,
        violations=tuple(violations),
    )


def codec_drop_pp(cost: CostModel, codecs: IntArray | None) -> float:
    """Summed accuracy drop (percentage points) of the chosen codecs, one per link use."""
    if codecs is None:
        return 0.0
    chosen = np.asarray(codecs)
    return float(cost.codec_drop_pp[chosen[chosen >= 0]].sum())


def _with_codecs(
    cost: CostModel, crosses: BoolArray, codecs: IntArray, compute: FloatArray, up: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Compute per tier and bytes up per link once the chosen codecs are applied."""
    if codecs.shape != crosses.shape:
        raise ValueError(f"codecs has shape {codecs.shape}, expected {crosses.shape}")
    compute, up = compute.copy(), up.copy()
    for node, link in zip(*np.nonzero(codecs >= 0), strict=True):
        k = int(codecs[node, link])
        if k >= cost.n_codecs or cost.codec_node[k] != node:
            raise ValueError(
                f"codecs[{node}, {link}] = {k} is not a codec candidate of node "
                f"{cost.node_names[node]}"
            )
        if not crosses[node, link]:
            raise ValueError(
                f"codecs[{node}, {link}]: {cost.node_names[node]} does not cross "
                f"{cost.link_names[link]}"
            )
        up[link] -= cost.out_bytes[node] * (1.0 - cost.codec_ratio[k])
        compute[link] += cost.codec_encode_ms[k, link]
        compute[link + 1] += cost.codec_decode_ms[k, link + 1]
    return compute, up


def _expected_flows(cost: CostModel, tiers: IntArray) -> tuple[FloatArray, ...]:
    """Expected compute per tier, bytes up and down per link, and P(link used).

    Reach events are nested for exits at articulation nodes, so the probability that any
    of several nodes is reached is the largest of their reaches (docs/concepts.md, "Early
    exits in the cost model").
    """
    reach = cost.node_reach
    links = np.arange(cost.n_tiers - 1)
    compute = np.asarray(
        np.bincount(
            tiers,
            weights=reach * cost.compute_ms[np.arange(cost.n_nodes), tiers],
            minlength=cost.n_tiers,
        ),
        dtype=np.float64,
    )
    # u's value crosses link l with the largest reach of its consumers above l.
    above = tiers[cost.edge_dst, None] > links  # [E, L]
    consumer_reach = np.where(above, reach[cost.edge_dst, None], 0.0)
    crossing = np.zeros((cost.n_nodes, len(links)))
    np.maximum.at(crossing, cost.edge_src, consumer_reach)
    crossing *= tiers[:, None] <= links
    up = cost.out_bytes @ crossing
    outputs = cost.output_nodes
    down = (cost.out_bytes[outputs] * reach[outputs]) @ (tiers[outputs, None] > links)
    exits = cost.exit_nodes
    down = down + (cost.exit_out_bytes * cost.exit_rates) @ (tiers[exits, None] > links)
    # An input goes above link l when it reaches any node there.
    used = np.where(tiers[:, None] > links, reach[:, None], 0.0).max(axis=0, initial=0.0)
    return compute, up, down, used


def _violations(cost: CostModel, tiers: IntArray, latency_ms: float) -> list[str]:
    problems: list[str] = []
    names = cost.node_names
    for node in np.flatnonzero(~cost.allowed[np.arange(cost.n_nodes), tiers]):
        problems.append(f"node {names[node]} may not run on {cost.tier_names[tiers[node]]}")
    for node in cost.private_nodes:
        if tiers[node] != 0:
            problems.append(
                f"private input: {names[node]} reads the raw input but runs on "
                f"{cost.tier_names[tiers[node]]}, not {cost.tier_names[0]}"
            )
    for tier in range(cost.n_tiers):
        limit = cost.memory_bytes[tier]
        if not np.isfinite(limit):
            continue
        on_tier = tiers == tier
        if not on_tier.any():
            continue
        need = cost.tier_param_bytes(tier)[on_tier].sum() + cost.work_bytes[on_tier].max()
        if need > limit:
            problems.append(
                f"memory: tier {cost.tier_names[tier]} needs {need / 2**20:.1f} MiB "
                f"(parameters + peak working set), has {limit / 2**20:.1f} MiB"
            )
    if cost.slo_ms is not None and latency_ms > cost.slo_ms * (1 + 1e-9):
        problems.append(f"latency SLO: {latency_ms:.2f} ms > {cost.slo_ms:g} ms")
    return problems
