"""Codec-aware planning: choose the placement and each crossing value's codec together.

Auto-Split (Banitalebi-Dehkordi et al., KDD 2021) chooses the split point and the
bit-width of the activations that cross it jointly, because a value that compresses
well makes a split cheap that raw bytes would rule out. Here every measured (value,
codec) candidate of :class:`~tierflow.plan.codec_options.CodecOptions` becomes a binary
choice per link in the placement program (:mod:`tierflow.plan.milp`), with one row
bounding the summed accuracy drop, so the plan is optimal for the cost model
(docs/concepts.md, "Activation codecs in the cost model").
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

import numpy as np

from tierflow.errors import InfeasiblePlanError, PlanError
from tierflow.graph.layer_graph import LayerGraph
from tierflow.plan.codec_options import CodecOptions
from tierflow.plan.cost_model import Constraints, CostModel, FloatArray, IntArray, _replace
from tierflow.plan.evaluate import codec_drop_pp, evaluate
from tierflow.plan.explain import explain_infeasible
from tierflow.plan.milp import solve
from tierflow.plan.objective import Objective
from tierflow.plan.plan import Plan
from tierflow.plan.planner import cost_model_for, package_plan
from tierflow.plan.tier_speeds import tier_speeds
from tierflow.profile.profile import Profile
from tierflow.topology.schema import Topology


def codec_cost_model(
    base: CostModel,
    options: CodecOptions,
    speeds: FloatArray,
    *,
    max_accuracy_drop_pp: float | None,
    model: str = "model",
) -> CostModel:
    """``base`` with the candidates of ``options`` as codec choices.

    Candidates whose drop alone exceeds the budget can never be chosen and are left out;
    with no candidate left the result is ``base`` itself, so the program is
    :func:`~tierflow.plan.plan`'s.
    """
    index = {name: i for i, name in enumerate(base.node_names)}
    kept: list[int] = []
    for position, candidate in enumerate(options.candidates):
        if candidate.node not in index:
            raise PlanError(
                f"codec options candidates.{position}: node {candidate.node!r} is not in "
                f"the graph of {model}"
            )
        if max_accuracy_drop_pp is None or candidate.accuracy_drop_pp <= max_accuracy_drop_pp:
            kept.append(position)
    if not kept:
        return base
    chosen = [options.candidates[k] for k in kept]
    encode = np.array([c.encode_ms for c in chosen])
    decode = np.array([c.decode_ms for c in chosen])
    return _replace(
        base,
        codec_specs=tuple(c.codec for c in chosen),
        codec_node=np.array([index[c.node] for c in chosen], dtype=np.int64),
        codec_ratio=np.array([c.ratio for c in chosen]),
        codec_encode_ms=encode[:, None] / speeds[None, :],
        codec_decode_ms=decode[:, None] / speeds[None, :],
        codec_drop_pp=np.array([c.accuracy_drop_pp for c in chosen]),
        max_codec_drop_pp=max_accuracy_drop_pp,
    )


def link_codecs(cost: CostModel, codecs: IntArray | None) -> dict[str, dict[str, str]]:
    """``{sending tier: {value: codec spec}}`` for the chosen codecs (the manifest's shape)."""
    result: dict[str, dict[str, str]] = {}
    if codecs is None:
        return result
    for node, link in zip(*np.nonzero(codecs >= 0), strict=True):
        k = int(codecs[node, link])
        # Link l leaves tier l upward, so tier l is the one that encodes.
        tier = cost.tier_names[int(link)]
        result.setdefault(tier, {})[cost.node_names[int(node)]] = cost.codec_specs[k]
    return result


def plan_with_codecs(
    graph: LayerGraph,
    topology: Topology,
    options: CodecOptions,
    *,
    max_accuracy_drop_pp: float = 1.0,
    profile: Profile | None = None,
    tier_profiles: Mapping[str, Profile] | None = None,
    objective: str | Objective = "latency",
    pins: Mapping[str, str] | None = None,
    private_input: bool = False,
    slo_ms: float | None = None,
    service_ms: Mapping[str, float] | None = None,
    time_limit_s: float | None = None,
) -> Plan:
    """Choose the placement and, per crossing value and link, raw bytes or one codec.

    Parameters
    ----------
    options:
        Measured (value, codec) candidates (``codecs.json``). Raw bytes are always allowed.
    max_accuracy_drop_pp:
        Bound on the summed accuracy drop of the chosen codecs, in percentage points; a
        value compressed on two links counts twice (docs/concepts.md).

    The other parameters are those of :func:`tierflow.plan.plan`.

    Returns
    -------
    Plan
        ``predicted`` includes the codecs' bytes and encode/decode times; ``link_codecs``
        the choice per sending tier; ``codec_accuracy_drop_pp`` its summed drop. The
        baselines stay raw. With no usable candidate the plan is :func:`~tierflow.plan.plan`'s.

    Raises
    ------
    InfeasiblePlanError
        When no placement satisfies the constraints.

    Examples
    --------
    >>> options = CodecOptions.load("runs/lenet/codecs.json")  # doctest: +SKIP
    >>> plan = plan_with_codecs(graph, topology, options, max_accuracy_drop_pp=0.5)
    >>> plan.link_codecs
    {'device': {'pool2': 'int8+zstd'}}
    """
    if not max_accuracy_drop_pp >= 0:
        raise PlanError(f"max_accuracy_drop_pp must be >= 0, got {max_accuracy_drop_pp}")
    goal = Objective.parse(objective)
    constraints = Constraints(pins=pins, private_input=private_input, slo_ms=slo_ms)
    base = cost_model_for(
        graph,
        topology,
        profile=profile,
        tier_profiles=tier_profiles,
        constraints=constraints,
        service_ms=service_ms,
    )
    speeds = tier_speeds(graph, topology, base, profile)
    cost = codec_cost_model(
        base, options, speeds, max_accuracy_drop_pp=max_accuracy_drop_pp, model=graph.model
    )
    started = time.perf_counter()
    try:
        solution = solve(cost, goal, time_limit_s=time_limit_s)
    except InfeasiblePlanError as exc:
        raise InfeasiblePlanError(f"{graph.model}: {explain_infeasible(base, goal)}") from exc
    solve_ms = (time.perf_counter() - started) * 1000
    result = package_plan(cost, graph, goal, solution, constraints=constraints, solve_ms=solve_ms)
    if not cost.n_codecs:
        return result
    return dataclasses.replace(
        result,
        predicted=evaluate(cost, solution.tiers, solution.codecs),
        link_codecs=link_codecs(cost, solution.codecs),
        codec_accuracy_drop_pp=codec_drop_pp(cost, solution.codecs),
        solver={**result.solver, "codec_candidates": cost.n_codecs},
    )
