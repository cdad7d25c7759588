"""Exit-aware planning: choose the early-exit setting and the placement together.

Edgent (Li et al., 2018) and SPINN (Laskaridis et al., MobiCom 2020) choose where to
split a multi-exit network and which exits to use jointly, because an exit that answers
most inputs on the device makes offloading the rest cheaper on average. Here every
measured exit setting (plus "no early exit") gets its own expected-cost instance
(:mod:`tierflow.plan.exit_cost`), solved optimally; the planner then picks the setting:

* by default, the lowest expected objective among settings whose accuracy is within
  ``max_accuracy_drop_pp`` of the final classifier's;
* with ``latency_target_ms`` (Edgent's mode), the most accurate setting whose expected
  latency meets the target, ties going to the lower expected objective.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tierflow.errors import InfeasiblePlanError, PlanError
from tierflow.graph.layer_graph import LayerGraph
from tierflow.plan.cost_model import Constraints, CostModel, FloatArray, _replace
from tierflow.plan.evaluate import Prediction, evaluate, link_weights
from tierflow.plan.exit_cost import check_articulation, expected_cost_model, worst_case_cost_model
from tierflow.plan.exit_options import FINAL_EXIT, ExitOptions, ExitSetting, PlannedExit
from tierflow.plan.explain import explain_infeasible
from tierflow.plan.milp import Solution, solve
from tierflow.plan.objective import Objective
from tierflow.plan.plan import Plan
from tierflow.plan.planner import cost_model_for, package_plan
from tierflow.plan.tier_speeds import tier_speeds
from tierflow.profile.profile import Profile
from tierflow.topology.schema import Topology

# Relative slack when comparing an expected latency with a target, for rounding only.
_TARGET_SLACK = 1e-9


@dataclass(frozen=True)
class _Candidate:
    """One exit setting, solved: ``solution`` is ``None`` when no placement is feasible."""

    index: int | None  # position in ExitOptions.settings; None for "no early exit"
    setting: ExitSetting
    cost: CostModel
    solution: Solution | None
    prediction: Prediction | None
    value: float


class ExitInstances:
    """Builds the expected-cost instance of each exit setting from one base instance."""

    def __init__(
        self,
        graph: LayerGraph,
        topology: Topology,
        options: ExitOptions,
        base: CostModel,
        *,
        profile: Profile | None,
    ) -> None:
        self.options = options
        self.base = base
        index = {name: i for i, name in enumerate(base.node_names)}
        block_of = {member: node.name for node in graph.nodes for member in node.members}
        self.attach: dict[str, int] = {}
        for position, head in enumerate(options.heads):
            name = head.node if head.node in index else block_of.get(head.node, head.node)
            if name not in index:
                raise PlanError(
                    f"exit options heads.{position}: exit {head.name!r} attaches at node "
                    f"{head.node!r}, which is not in the graph of {graph.model}"
                )
            self.attach[head.name] = index[name]
        self.head_ms = _head_latency_ms(graph, topology, options, base, profile)
        self._checked: set[str] = set()

    def no_exit(self) -> ExitSetting:
        return ExitSetting({}, {FINAL_EXIT: 1.0}, self.options.final_accuracy)

    def active(self, setting: ExitSetting) -> list[str]:
        """Active exit names in backbone order."""
        return sorted(setting.thresholds, key=lambda name: (self.attach[name], name))

    def cost(self, setting: ExitSetting, *, source: str) -> CostModel:
        """The expected-cost instance of ``setting`` (``source`` names it in errors)."""
        names = self.active(setting)
        for name, rate in setting.exit_rates.items():
            if name != FINAL_EXIT and name not in setting.thresholds and rate > 0:
                raise PlanError(
                    f"{source}.exit_rates.{name} is {rate} but exit {name!r} is not active"
                )
        for name in names:
            if name not in self._checked:
                check_articulation(self.base, self.attach[name], exit_name=name)
                self._checked.add(name)
        heads = [self.options.heads.index(self.options.head(name)) for name in names]
        return expected_cost_model(
            self.base,
            np.array([self.attach[name] for name in names], dtype=np.int64),
            np.array([float(setting.exit_rates.get(name, 0.0)) for name in names]),
            np.array([self.options.head(name).output_bytes for name in names]),
            self.head_ms[heads] if heads else np.zeros((0, self.base.n_tiers)),
        )

    def planned_exits(self, setting: ExitSetting, tiers: np.ndarray) -> tuple[PlannedExit, ...]:
        return tuple(
            PlannedExit(
                name=name,
                node=self.options.head(name).node,
                tier=self.base.tier_names[int(tiers[self.attach[name]])],
                policy=self.options.policy,
                threshold=float(setting.thresholds[name]),
                exit_rate=float(setting.exit_rates.get(name, 0.0)),
            )
            for name in self.active(setting)
        )


def _head_latency_ms(
    graph: LayerGraph,
    topology: Topology,
    options: ExitOptions,
    base: CostModel,
    profile: Profile | None,
) -> FloatArray:
    """``[H, T]`` latency of each head on each tier.

    A head is timed on the host only (``host_latency_ms``); each tier runs it at its
    :func:`~tierflow.plan.tier_speeds.tier_speeds`.
    """
    host_ms = np.array([head.host_latency_ms for head in options.heads])
    speeds = tier_speeds(graph, topology, base, profile)
    return host_ms[:, None] / speeds[None, :]


def _solve(
    instances: ExitInstances,
    index: int | None,
    setting: ExitSetting,
    objective: Objective,
    *,
    slo_ms: float | None,
    time_limit_s: float | None,
) -> _Candidate:
    source = "no early exit" if index is None else f"exit options settings.{index}"
    cost = instances.cost(setting, source=source)
    if slo_ms is not None:
        cost = _replace(cost, slo_ms=slo_ms)
    try:
        solution = solve(cost, objective, time_limit_s=time_limit_s)
    except InfeasiblePlanError:
        return _Candidate(index, setting, cost, None, None, float("inf"))
    prediction = evaluate(cost, solution.tiers)
    value = prediction.cost(objective, link_weights(cost))
    return _Candidate(index, setting, cost, solution, prediction, value)


def plan_with_exits(
    graph: LayerGraph,
    topology: Topology,
    options: ExitOptions,
    *,
    profile: Profile | None = None,
    tier_profiles: Mapping[str, Profile] | None = None,
    objective: str | Objective = "latency",
    latency_target_ms: float | None = None,
    max_accuracy_drop_pp: float | None = None,
    pins: Mapping[str, str] | None = None,
    private_input: bool = False,
    slo_ms: float | None = None,
    service_ms: Mapping[str, float] | None = None,
    time_limit_s: float | None = None,
) -> Plan:
    """Choose an early-exit setting and the placement together, minimising expected cost.

    Parameters
    ----------
    options:
        What the exit model offers (``exits.json``): heads and measured settings. Every
        head must attach at an articulation node of ``graph``.
    latency_target_ms:
        Edgent's mode: the most accurate setting whose expected latency is at most this,
        ties going to the lower expected objective.
    max_accuracy_drop_pp:
        Only settings within this many percentage points of ``options.final_accuracy``.
    slo_ms:
        Bound on the *expected* latency of the placement of each setting.

    The other parameters are those of :func:`tierflow.plan.plan`.

    Returns
    -------
    Plan
        ``predicted`` and the baselines are expected costs under the chosen setting;
        ``worst_case`` is the cost of an input no exit answers; ``exits`` the active
        exits with their tiers; ``solver["exit_setting"]`` the chosen setting's index in
        ``options.settings`` (``None``: no early exit), ``solver["exit_unaware"]`` the
        expected cost of the placement that ignores exits, under the same setting (the
        whole plan: :func:`exit_unaware_plan`).

    Raises
    ------
    InfeasiblePlanError
        When no setting can be placed within the constraints or meets the latency
        target; the message gives the best achievable expected latency.

    Examples
    --------
    >>> options = ExitOptions.load("runs/lenet/exits.json")  # doctest: +SKIP
    >>> plan = plan_with_exits(graph, topology, options, max_accuracy_drop_pp=1.0)
    >>> [(e.name, e.tier) for e in plan.exits]
    """
    if max_accuracy_drop_pp is not None and not max_accuracy_drop_pp >= 0:
        raise PlanError(f"max_accuracy_drop_pp must be >= 0, got {max_accuracy_drop_pp}")
    if latency_target_ms is not None and not latency_target_ms > 0:
        raise PlanError(f"latency_target_ms must be > 0, got {latency_target_ms}")
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
    instances = ExitInstances(graph, topology, options, base, profile=profile)
    floor = (
        -np.inf
        if max_accuracy_drop_pp is None
        else options.final_accuracy - max_accuracy_drop_pp / 100.0
    )
    settings: list[tuple[int | None, ExitSetting]] = [(None, instances.no_exit())]
    settings += [(i, s) for i, s in enumerate(options.settings) if s.accuracy >= floor - 1e-12]
    # With a latency objective the unconstrained optimum already has the least expected
    # latency; otherwise the target becomes an expected-latency bound on each placement.
    bound = slo_ms
    if latency_target_ms is not None and goal.weights != (("latency", 1.0),):
        bound = latency_target_ms if slo_ms is None else min(slo_ms, latency_target_ms)
    started = time.perf_counter()
    candidates = [
        _solve(instances, index, setting, goal, slo_ms=bound, time_limit_s=time_limit_s)
        for index, setting in settings
    ]
    solve_ms = (time.perf_counter() - started) * 1000
    chosen = _choose(graph, instances, candidates, goal, latency_target_ms, time_limit_s)
    assert chosen.solution is not None
    result = package_plan(
        chosen.cost, graph, goal, chosen.solution, constraints=constraints, solve_ms=solve_ms
    )
    # "No early exit" is the placement that ignores exits, unless the target bounded it.
    unaware = candidates[0].solution
    if bound != slo_ms:
        unaware = _solve(
            instances, None, candidates[0].setting, goal, slo_ms=slo_ms, time_limit_s=time_limit_s
        ).solution
    solver: dict[str, Any] = {
        **result.solver,
        "exit_setting": chosen.index,
        "exit_settings_tried": len(candidates),
        "exit_settings_feasible": sum(c.solution is not None for c in candidates),
        "exit_unaware": None,
    }
    if unaware is not None:
        expected = evaluate(chosen.cost, unaware.tiers)
        solver["exit_unaware"] = {
            "latency_ms": expected.latency_ms,
            "objective_value": expected.cost(goal, link_weights(chosen.cost)),
        }
    return _with_exits(result, instances, chosen.setting, chosen.cost, chosen.solution, solver)


def _with_exits(
    result: Plan,
    instances: ExitInstances,
    setting: ExitSetting,
    cost: CostModel,
    solution: Solution,
    solver: Mapping[str, Any],
) -> Plan:
    return dataclasses.replace(
        result,
        exits=instances.planned_exits(setting, solution.tiers),
        worst_case=evaluate(worst_case_cost_model(cost), solution.tiers),
        accuracy=setting.accuracy,
        solver=dict(solver),
    )


def _choose(
    graph: LayerGraph,
    instances: ExitInstances,
    candidates: list[_Candidate],
    objective: Objective,
    latency_target_ms: float | None,
    time_limit_s: float | None,
) -> _Candidate:
    feasible = [c for c in candidates if c.prediction is not None]
    if latency_target_ms is None:
        if not feasible:
            reason = explain_infeasible(instances.base, objective)
            raise InfeasiblePlanError(f"{graph.model}: no exit setting can be placed: {reason}")
        # Lowest expected objective; ties go to the more accurate setting.
        return min(feasible, key=lambda c: (c.value, -c.setting.accuracy))
    limit = latency_target_ms * (1 + _TARGET_SLACK)
    meeting = [c for c in feasible if c.prediction is not None and c.prediction.latency_ms <= limit]
    if not meeting:
        if feasible and objective.weights == (("latency", 1.0),):  # each is its least
            best = min(c.prediction.latency_ms for c in feasible if c.prediction is not None)
        else:  # placements were bounded by the target: find the least latency without it
            best = _best_latency(instances, candidates, time_limit_s)
        if not np.isfinite(best):
            reason = explain_infeasible(instances.base, objective)
            raise InfeasiblePlanError(f"{graph.model}: no exit setting can be placed: {reason}")
        raise InfeasiblePlanError(
            f"{graph.model}: no exit setting meets latency_target_ms {latency_target_ms:g}; "
            f"the best achievable expected latency is {best:.2f} ms"
        )
    return max(meeting, key=lambda c: (c.setting.accuracy, -c.value))


def _best_latency(
    instances: ExitInstances, candidates: list[_Candidate], time_limit_s: float | None
) -> float:
    """The least expected latency any admissible setting reaches (for the error message)."""
    latency = Objective.parse("latency")
    best = float("inf")
    for candidate in candidates:
        solved = _solve(
            instances,
            candidate.index,
            candidate.setting,
            latency,
            slo_ms=instances.base.slo_ms,
            time_limit_s=time_limit_s,
        )
        if solved.prediction is not None:
            best = min(best, solved.prediction.latency_ms)
    return best


def exit_unaware_plan(
    graph: LayerGraph,
    topology: Topology,
    options: ExitOptions,
    aware: Plan,
    *,
    profile: Profile | None = None,
    tier_profiles: Mapping[str, Profile] | None = None,
    service_ms: Mapping[str, float] | None = None,
    time_limit_s: float | None = None,
) -> Plan:
    """The placement that ignores exits, costed under the setting ``aware`` chose.

    What a planner without exit awareness would deploy: the placement of
    :func:`~tierflow.plan.plan` (every node reached by every input) for ``aware``'s
    objective and constraints, with the exits of the setting :func:`plan_with_exits` chose
    for ``aware`` running on whatever tier holds their attach nodes. ``predicted`` and the
    baselines are expected costs under that setting, so the two plans compare directly.
    Pass the same ``profile``, ``tier_profiles`` and ``service_ms`` as for ``aware``.

    Examples
    --------
    >>> aware = plan_with_exits(graph, topology, options)  # doctest: +SKIP
    >>> unaware = exit_unaware_plan(graph, topology, options, aware)
    >>> unaware.predicted.latency_ms >= aware.predicted.latency_ms
    True
    """
    setting = chosen_setting(aware, options)
    goal = Objective.parse(aware.objective)
    limits = aware.constraints
    slo = limits.get("slo_ms")
    constraints = Constraints(
        pins=dict(limits.get("pins") or {}),
        private_input=bool(limits.get("private_input", False)),
        slo_ms=None if slo is None else float(slo),
    )
    base = cost_model_for(
        graph,
        topology,
        profile=profile,
        tier_profiles=tier_profiles,
        constraints=constraints,
        service_ms=service_ms,
    )
    instances = ExitInstances(graph, topology, options, base, profile=profile)
    cost = instances.cost(setting, source="setting")
    started = time.perf_counter()
    try:
        solution = solve(base, goal, time_limit_s=time_limit_s)
    except InfeasiblePlanError as exc:
        raise InfeasiblePlanError(f"{graph.model}: {explain_infeasible(base, goal)}") from exc
    solve_ms = (time.perf_counter() - started) * 1000
    result = package_plan(cost, graph, goal, solution, constraints=constraints, solve_ms=solve_ms)
    solver = {
        **result.solver,
        "exit_setting": aware.solver.get("exit_setting"),
        "exit_aware": False,
    }
    return _with_exits(result, instances, setting, cost, solution, solver)


def chosen_setting(plan: Plan, options: ExitOptions) -> ExitSetting:
    """The setting :func:`plan_with_exits` chose for ``plan`` ("no early exit" included)."""
    if "exit_setting" not in plan.solver:
        raise PlanError("plan solver.exit_setting is missing: the plan was not exit-aware")
    index = plan.solver["exit_setting"]
    if index is None:
        return ExitSetting({}, {FINAL_EXIT: 1.0}, options.final_accuracy)
    if not isinstance(index, int) or not 0 <= index < len(options.settings):
        raise PlanError(f"plan solver.exit_setting {index!r} is not a setting of these options")
    return options.settings[index]
