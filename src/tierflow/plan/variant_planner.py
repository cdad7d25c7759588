"""Compression-aware planning: a model variant per tier, codecs per link, one placement.

A weak device that runs int8 segments is three times faster and holds a quarter of the
parameter bytes, which moves the best split; a thin link makes a compressed value worth
its encoding time. Auto-Split (KDD 2021) chooses split and bit-widths together for this
reason. Here every tier may run its segments as fp32 or as one measured variant
(:class:`~tierflow.plan.variant_options.VariantOptions`), and every crossing value raw or
through one measured codec (:class:`~tierflow.plan.codec_options.CodecOptions`), under
one accuracy budget.

Note [Variants by enumeration]
    A variant changes the cost of every node on its tier, so in the placement program it
    would multiply two binaries (node on tier × tier runs variant). There are few tiers
    and few variants (3 tiers × {fp32, int8-static, int8-dynamic}: 27 combinations), so
    :func:`solve_compressed` enumerates the per-tier choices instead and solves the
    placement (and codec) program exactly for each: the result is optimal for the cost
    model, and each program keeps the closure structure that makes its LP integral.
    Combinations whose variants alone exceed the budget are skipped. A variant on a tier
    that ends up running nothing is moot: ties go to the choice with the smaller drop.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tierflow.errors import InfeasiblePlanError, PlanError
from tierflow.graph.layer_graph import LayerGraph
from tierflow.plan.codec_options import CodecOptions
from tierflow.plan.codec_planner import codec_cost_model, link_codecs
from tierflow.plan.cost_model import Constraints, CostModel, FloatArray, _replace
from tierflow.plan.evaluate import codec_drop_pp, evaluate, link_weights
from tierflow.plan.explain import explain_infeasible
from tierflow.plan.milp import Solution, solve
from tierflow.plan.objective import Objective
from tierflow.plan.plan import Plan
from tierflow.plan.planner import cost_model_for, package_plan
from tierflow.plan.tier_speeds import tier_speeds
from tierflow.plan.variant_options import VariantOptions
from tierflow.profile.profile import Profile
from tierflow.topology.schema import Topology

# Relative tolerance under which two objective values count as a tie (then the smaller
# accuracy drop wins): the solver's own optimality tolerance is of this order.
_TIE = 1e-9


@dataclass(frozen=True)
class VariantArrays:
    """One variant as arrays over the cost model's nodes."""

    name: str
    time_ratio: FloatArray  # [N]
    size_ratio: FloatArray  # [N]
    drop_pp: float
    segment_ms: float = 0.0  # host ms a tier running it pays once per request


@dataclass(frozen=True)
class CompressedSolution:
    """The best placement over every per-tier variant choice.

    ``variants[t]`` indexes the variant tier ``t`` runs (-1: fp32); ``cost`` is the cost
    model of that choice (codecs included), so ``evaluate(cost, solution.tiers,
    solution.codecs)`` is the plan's prediction.
    """

    solution: Solution
    variants: tuple[int, ...]
    cost: CostModel
    drop_pp: float
    combinations: int


def variant_arrays(
    base: CostModel, options: VariantOptions, *, model: str = "model"
) -> list[VariantArrays]:
    """Each variant of ``options`` as per-node arrays; a node not listed keeps ratio 1."""
    index = {name: i for i, name in enumerate(base.node_names)}
    result = []
    for position, option in enumerate(options.variants):
        arrays = []
        for table in ("time_ratio", "size_ratio"):
            ratios = np.ones(base.n_nodes)
            for node, ratio in getattr(option, table).items():
                if node not in index:
                    raise PlanError(
                        f"variant options variants.{position}.{table}: node {node!r} is not "
                        f"in the graph of {model} (variants are measured per model)"
                    )
                ratios[index[node]] = ratio
            arrays.append(ratios)
        result.append(
            VariantArrays(
                option.name, arrays[0], arrays[1], option.accuracy_drop_pp, option.segment_ms
            )
        )
    return result


def with_variants(
    base: CostModel,
    variants: Sequence[VariantArrays],
    choice: Sequence[int],
    speeds: FloatArray | None = None,
) -> CostModel:
    """``base`` with tier ``t`` running ``variants[choice[t]]`` (-1: fp32).

    A variant's ``segment_ms`` joins the tier's ``service_ms``, paid once per request
    whenever the tier is on the request's path; ``speeds`` (host to tier) scale it, and
    are needed when a chosen variant has one.
    """
    if all(k < 0 for k in choice):
        return base
    compute = base.compute_ms.copy()
    scale = np.ones((base.n_nodes, base.n_tiers))
    service = base.service_ms.copy()
    for tier, k in enumerate(choice):
        if k < 0:
            continue
        compute[:, tier] *= variants[k].time_ratio
        scale[:, tier] = variants[k].size_ratio
        if variants[k].segment_ms:
            if speeds is None:
                raise PlanError(f"variant {variants[k].name}: segment_ms needs the tiers' speeds")
            service[tier] += variants[k].segment_ms / speeds[tier]
    return _replace(base, compute_ms=compute, param_scale=scale, service_ms=service)


def solve_compressed(
    base: CostModel,
    variants: Sequence[VariantArrays],
    objective: Objective,
    *,
    max_accuracy_drop_pp: float,
    codec_options: CodecOptions | None = None,
    speeds: FloatArray | None = None,
    time_limit_s: float | None = None,
    model: str = "model",
) -> CompressedSolution:
    """Optimal placement, per-tier variant and per-link codecs (Note [Variants by
    enumeration]).

    ``speeds`` (host-to-tier speed factors) is needed with ``codec_options`` and with
    variants that have a ``segment_ms``.

    Raises
    ------
    InfeasiblePlanError
        When no combination has a feasible placement.
    """
    if codec_options is not None and speeds is None:
        raise PlanError("solve_compressed: codec options need the tiers' speeds")
    weights = link_weights(base)
    best: tuple[float, float, int] | None = None
    chosen: CompressedSolution | None = None
    combinations = 0
    for choice in itertools.product(range(-1, len(variants)), repeat=base.n_tiers):
        budget = max_accuracy_drop_pp - sum(variants[k].drop_pp for k in choice if k >= 0)
        if budget < 0:
            continue
        cost = with_variants(base, variants, choice, speeds)
        if codec_options is not None and speeds is not None:
            cost = codec_cost_model(
                cost, codec_options, speeds, max_accuracy_drop_pp=budget, model=model
            )
        combinations += 1
        try:
            solution = solve(cost, objective, time_limit_s=time_limit_s)
        except InfeasiblePlanError:
            continue
        prediction = evaluate(cost, solution.tiers, solution.codecs)
        if not prediction.feasible:
            continue
        used = _effective(choice, solution)
        drop = sum(variants[k].drop_pp for k in used if k >= 0)
        drop += codec_drop_pp(cost, solution.codecs)
        value = prediction.cost(objective, weights)
        key = (value, drop, sum(k >= 0 for k in used))
        if best is None or _better(key, best):
            best = key
            chosen = CompressedSolution(solution, used, cost, drop, 0)
    if chosen is None:
        raise InfeasiblePlanError("no placement satisfies the constraints with any variant")
    return dataclasses.replace(chosen, combinations=combinations)


def _effective(choice: Sequence[int], solution: Solution) -> tuple[int, ...]:
    """``choice`` with tiers that run no node reset to fp32 (their variant is moot)."""
    occupied = set(np.unique(solution.tiers).tolist())
    return tuple(k if tier in occupied else -1 for tier, k in enumerate(choice))


def _better(key: tuple[float, float, int], best: tuple[float, float, int]) -> bool:
    value, drop, count = key
    best_value, best_drop, best_count = best
    if value < best_value - _TIE * max(1.0, abs(best_value)):
        return True
    if value > best_value + _TIE * max(1.0, abs(best_value)):
        return False
    return (drop, count) < (best_drop, best_count)


def plan_compressed(
    graph: LayerGraph,
    topology: Topology,
    *,
    variants: VariantOptions | None = None,
    codecs: CodecOptions | None = None,
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
    """Choose the placement, a model variant per tier and a codec per crossing together.

    Parameters
    ----------
    variants:
        Measured variants (``variants.json``); fp32 is always allowed. ``None``: fp32
        everywhere (then this is :func:`plan_with_codecs`).
    codecs:
        Measured (value, codec) candidates (``codecs.json``); ``None``: raw values.
    max_accuracy_drop_pp:
        Bound on the summed accuracy drop of the chosen variants (each counted once per
        tier that runs it) and codecs, in percentage points.

    The other parameters are those of :func:`tierflow.plan.plan`.

    Returns
    -------
    Plan
        ``tier_variants`` names each tier's non-fp32 variant and ``link_codecs`` the
        codecs; ``predicted`` includes both, ``compression_drop_pp`` is their summed drop.
        ``baselines`` are the uncompressed model's (all-on-a-tier, Neurosurgeon, DADS),
        so the comparison shows what compression buys.

    Raises
    ------
    InfeasiblePlanError
        When no placement satisfies the constraints with any variant.
    PlanError
        If the options were measured on another model or name nodes not in the graph.

    Examples
    --------
    >>> plan = plan_compressed(graph, topology, variants=VariantOptions.load("v.json"),
    ...                        max_accuracy_drop_pp=1.0)  # doctest: +SKIP
    >>> plan.tier_variants
    {'camera': 'int8-static'}
    """
    if not max_accuracy_drop_pp >= 0:
        raise PlanError(f"max_accuracy_drop_pp must be >= 0, got {max_accuracy_drop_pp}")
    if variants is not None and variants.model and variants.model != graph.model:
        raise PlanError(f"variant options were measured on {variants.model!r}, not {graph.model!r}")
    _check_batch(graph, variants, codecs)
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
    arrays = [] if variants is None else variant_arrays(base, variants, model=graph.model)
    needs_speeds = codecs is not None or any(a.segment_ms for a in arrays)
    speeds = tier_speeds(graph, topology, base, profile) if needs_speeds else None
    started = time.perf_counter()
    try:
        found = solve_compressed(
            base,
            arrays,
            goal,
            max_accuracy_drop_pp=max_accuracy_drop_pp,
            codec_options=codecs,
            speeds=speeds,
            time_limit_s=time_limit_s,
            model=graph.model,
        )
    except InfeasiblePlanError as exc:
        raise InfeasiblePlanError(f"{graph.model}: {explain_infeasible(base, goal)}") from exc
    solve_ms = (time.perf_counter() - started) * 1000
    solution, cost = found.solution, found.cost
    result = package_plan(base, graph, goal, solution, constraints=constraints, solve_ms=solve_ms)
    if cost is base and variants is None:  # no usable codec: the plan is plan()'s
        return result
    solver = dict(result.solver)
    if cost.n_codecs:
        solver["codec_candidates"] = cost.n_codecs
    if variants is not None:
        solver["variant_combinations"] = found.combinations
    return dataclasses.replace(
        result,
        predicted=evaluate(cost, solution.tiers, solution.codecs),
        link_codecs=link_codecs(cost, solution.codecs),
        codec_accuracy_drop_pp=codec_drop_pp(cost, solution.codecs) if cost.n_codecs else None,
        tier_variants={
            base.tier_names[tier]: arrays[k].name for tier, k in enumerate(found.variants) if k >= 0
        },
        compression_drop_pp=None if variants is None else found.drop_pp,
        solver=solver,
    )


def request_batch(graph: LayerGraph) -> int | None:
    """Samples per request the graph was captured for: its first input's leading dimension."""
    for name in graph.inputs:
        outputs = graph[name].outputs
        if outputs and outputs[0].shape:
            return int(outputs[0].shape[0])
    return None


def _check_batch(
    graph: LayerGraph, variants: VariantOptions | None, codecs: CodecOptions | None
) -> None:
    """Options timed on requests of another size would mis-predict every time they add."""
    batch = request_batch(graph)
    for what, options in (("variant options", variants), ("codec options", codecs)):
        if options is None or batch is None or options.batch == batch:
            continue
        raise PlanError(
            f"{what} were measured on requests of {options.batch} sample(s), but "
            f"{graph.model} is planned for requests of {batch}: measure them again at this "
            f"input shape (tierflow compress --input-shape) or plan at theirs"
        )


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
    return plan_compressed(
        graph,
        topology,
        codecs=options,
        max_accuracy_drop_pp=max_accuracy_drop_pp,
        profile=profile,
        tier_profiles=tier_profiles,
        objective=objective,
        pins=pins,
        private_input=private_input,
        slo_ms=slo_ms,
        service_ms=service_ms,
        time_limit_s=time_limit_s,
    )
