"""`plan()`: the pure decision step, from graph + topology + costs to a `Plan`."""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from tierflow.errors import InfeasiblePlanError
from tierflow.graph.layer_graph import LayerGraph
from tierflow.plan.baselines import baselines
from tierflow.plan.cost_model import Constraints, CostModel, IntArray, build_cost_model
from tierflow.plan.evaluate import evaluate
from tierflow.plan.explain import explain_infeasible
from tierflow.plan.milp import Solution, solve
from tierflow.plan.objective import Objective
from tierflow.plan.plan import BaselineResult, Cut, Plan
from tierflow.profile.profile import Profile
from tierflow.profile.tier_latency import tier_latency_ms
from tierflow.topology.schema import Topology


def plan(
    graph: LayerGraph,
    topology: Topology,
    *,
    profile: Profile | None = None,
    tier_profiles: Mapping[str, Profile] | None = None,
    objective: str | Objective = "latency",
    pins: Mapping[str, str] | None = None,
    private_input: bool = False,
    slo_ms: float | None = None,
    service_ms: Mapping[str, float] | None = None,
    time_limit_s: float | None = None,
) -> Plan:
    """Place every layer of ``graph`` on a tier of ``topology``, optimally for the cost model.

    Parameters
    ----------
    graph:
        The captured model (:func:`tierflow.capture`), fine-grained or coarsened to blocks.
    topology:
        Tiers and links (:func:`tierflow.load_topology`).
    profile:
        Per-node latency measured on the host; a tier's latency is host latency divided
        by its ``compute.speed``. Without it, latency is estimated from FLOPs.
    tier_profiles:
        Profiles measured on the tiers themselves (``{tier: Profile}``); they override
        ``profile`` and the topology's ``compute.profile`` files for those tiers.
    objective:
        ``"latency"``, ``"energy"``, ``"bytes"``, ``"throughput"`` or a weighted mix such
        as ``"latency=1,energy=0.5"`` (units in docs/concepts.md).
    pins:
        ``{node: tier}`` nodes that must run on a given tier.
    private_input:
        Keep the raw input on the first tier: every layer reading it runs there.
    slo_ms:
        Upper bound on the end-to-end latency of one input.
    service_ms:
        ``{tier: ms}`` per-request cost of each tier's service stack when the tier is on
        the request's path. Defaults to the ``service_ms`` that tier profiles measured on
        the testbed record in their meta, else 0.
    time_limit_s:
        Stop the solver after this long and return the best placement found (the plan's
        ``solver.status`` then says it may not be optimal).

    Returns
    -------
    Plan
        The optimal placement, its predicted cost and the baselines.

    Raises
    ------
    InfeasiblePlanError
        When no placement satisfies the constraints; the message names the constraint.

    Examples
    --------
    >>> module, inputs = tierflow.resolve_model("zoo:lenet")  # doctest: +SKIP
    >>> graph = tierflow.capture(module, inputs)
    >>> topology = tierflow.load_topology("examples/topologies/wifi-edge-cloud.yaml")
    >>> print(tierflow.plan(graph, topology, objective="latency"))
    """
    constraints = Constraints(pins=pins, private_input=private_input, slo_ms=slo_ms)
    cost = cost_model_for(
        graph,
        topology,
        profile=profile,
        tier_profiles=tier_profiles,
        constraints=constraints,
        service_ms=service_ms,
    )
    return plan_cost_model(
        cost,
        graph,
        Objective.parse(objective),
        constraints=constraints,
        time_limit_s=time_limit_s,
    )


def cost_model_for(
    graph: LayerGraph,
    topology: Topology,
    *,
    profile: Profile | None,
    tier_profiles: Mapping[str, Profile] | None,
    constraints: Constraints,
    service_ms: Mapping[str, float] | None,
) -> CostModel:
    """The cost model :func:`plan` solves (its parameters have the same meaning)."""
    latency = tier_latency_ms(
        graph, topology, host=profile, tier_profiles=dict(tier_profiles or {})
    )
    if service_ms is None:
        service_ms = {
            tier: float(profile.meta.get("service_ms", 0.0))
            for tier, profile in (tier_profiles or {}).items()
        }
    return build_cost_model(
        graph, topology, latency, constraints=constraints, service_ms=service_ms
    )


def plan_cost_model(
    cost: CostModel,
    graph: LayerGraph,
    objective: Objective,
    *,
    constraints: Constraints | None = None,
    time_limit_s: float | None = None,
) -> Plan:
    """Solve a prepared cost model and package the result as a :class:`Plan`."""
    constraints = constraints or Constraints()
    started = time.perf_counter()
    try:
        solution = solve(cost, objective, time_limit_s=time_limit_s)
    except InfeasiblePlanError as exc:
        raise InfeasiblePlanError(f"{graph.model}: {explain_infeasible(cost, objective)}") from exc
    solve_ms = (time.perf_counter() - started) * 1000
    return package_plan(
        cost, graph, objective, solution, constraints=constraints, solve_ms=solve_ms
    )


def package_plan(
    cost: CostModel,
    graph: LayerGraph,
    objective: Objective,
    solution: Solution,
    *,
    constraints: Constraints,
    solve_ms: float,
) -> Plan:
    """A :class:`Plan` for a solved instance: its prediction, cuts and baselines."""
    prediction = evaluate(cost, solution.tiers)
    compared = baselines(cost, objective)
    tier_names = cost.tier_names
    assignment: dict[str, str] = {}
    for node, tier in zip(graph.nodes, solution.tiers, strict=True):
        for member in node.members:
            assignment[member] = tier_names[tier]
    memory = {
        name: float(limit) / 2**20
        for name, limit in zip(tier_names, cost.memory_bytes, strict=True)
        if np.isfinite(limit)
    }
    return Plan(
        model=graph.model,
        objective=str(objective),
        tiers=tier_names,
        assignment=assignment,
        cuts=_cuts(cost, solution.tiers),
        predicted=prediction,
        baselines={b.name: BaselineResult(b.name, b.description, b.prediction) for b in compared},
        granularity=graph.granularity,
        tracer=graph.tracer,
        constraints={
            "private_input": constraints.private_input,
            "pins": dict(constraints.pins or {}),
            "slo_ms": constraints.slo_ms,
            "memory_mib": memory,
        },
        solver={
            "method": f"highs-{solution.method}",
            "status": solution.status,
            "solve_ms": round(solve_ms, 3),
            "plan_nodes": cost.n_nodes,
        },
    )


def _cuts(cost: CostModel, tiers: IntArray) -> tuple[Cut, ...]:
    highest_user = tiers.copy()
    np.maximum.at(highest_user, cost.edge_src, tiers[cost.edge_dst])
    cuts = []
    for link, name in enumerate(cost.link_names):
        crossing = np.flatnonzero((tiers <= link) & (highest_user > link))
        if len(crossing):
            cuts.append(
                Cut(
                    link=name,
                    tensors=tuple(cost.node_names[i] for i in crossing),
                    bytes=float(cost.out_bytes[crossing].sum()),
                )
            )
    return tuple(cuts)
