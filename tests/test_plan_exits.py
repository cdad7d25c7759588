"""Exit-aware planning: the expected cost is exact, and the planner is optimal for it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import tierflow.cli.commands_plan  # noqa: F401  (registers the command)
from tierflow.cli.app import app
from tierflow.errors import InfeasiblePlanError, PlanError
from tierflow.graph import capture
from tierflow.models import resolve_model
from tierflow.plan import Plan, plan
from tierflow.plan.cost_model import Constraints, CostModel, _replace
from tierflow.plan.evaluate import evaluate, link_weights
from tierflow.plan.exit_cost import (
    check_articulation,
    descendants,
    expected_cost_model,
    worst_case_cost_model,
)
from tierflow.plan.exit_options import ExitHead, ExitOptions, ExitSetting
from tierflow.plan.exit_planner import (
    ExitInstances,
    chosen_setting,
    exit_unaware_plan,
    plan_with_exits,
)
from tierflow.plan.milp import solve
from tierflow.plan.objective import Objective
from tierflow.plan.planner import cost_model_for
from tierflow.topology import topology_from_dict

from plan_instances import brute_force, objectives, random_cost_model

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROOT = Path(__file__).parent.parent
THREE_TIERS = ROOT / "examples" / "topologies" / "camera-gateway-cloud.yaml"


# -- random instances with articulation exits ---------------------------------------------
def random_exit_instance(
    rng: np.random.Generator,
    *,
    n_nodes: int,
    n_tiers: int,
    chain: bool = False,
    memory: bool = False,
    pins: int = 0,
    slo: bool = False,
) -> CostModel:
    """A random DAG of blocks joined at articulation nodes, with 1–3 exits at them.

    Each node reads only nodes since the latest articulation node before it, so every
    articulation node separates what comes before from what comes after.
    """
    cost = random_cost_model(
        rng, n_nodes=n_nodes, n_tiers=n_tiers, memory=memory, pins=pins, slo=slo
    )
    articulations = sorted(
        {0} | {int(a) for a in rng.choice(np.arange(1, n_nodes), size=n_nodes // 3)}
    )
    src: list[int] = []
    dst: list[int] = []
    for node in range(1, n_nodes):
        start = max(a for a in articulations if a < node)
        if chain:
            producers = [node - 1]
        else:
            pool = np.arange(start, node)
            k = int(rng.integers(1, min(len(pool), 3) + 1))
            producers = sorted({start, *(int(p) for p in rng.choice(pool, k, replace=False))})
        for producer in producers:
            src.append(producer)
            dst.append(node)
    work = cost.out_bytes.copy()
    np.add.at(work, dst, cost.out_bytes[src])
    cost = _replace(
        cost,
        edge_src=np.array(src, dtype=np.int64),
        edge_dst=np.array(dst, dtype=np.int64),
        output_nodes=np.array([n_nodes - 1], dtype=np.int64),
        work_bytes=work,
        private_nodes=np.zeros(0, dtype=np.int64),
    )
    candidates = [a for a in articulations if a < n_nodes - 1]
    k = int(rng.integers(1, min(3, len(candidates)) + 1))
    exit_nodes = np.sort(rng.choice(candidates, size=k, replace=False)).astype(np.int64)
    rates = rng.dirichlet(np.ones(k + 1))[:k] * rng.uniform(0.2, 1.0)
    head_ms = rng.uniform(0.0, 3.0, size=(k, 1)) / np.sort(rng.uniform(0.2, 8.0, n_tiers))
    return expected_cost_model(
        cost, exit_nodes, rates, rng.choice([40.0, 400.0, 4e3], size=k), head_ms
    )


def assert_solver_matches_brute_force(cost: CostModel, objective_spec: str) -> None:
    objective = Objective.parse(objective_spec)
    expected = brute_force(cost, objective)
    if expected is None:
        with pytest.raises(InfeasiblePlanError):
            solve(cost, objective)
        return
    solution = solve(cost, objective)
    prediction = evaluate(cost, solution.tiers)
    assert prediction.feasible, prediction.violations
    value = prediction.cost(objective, link_weights(cost))
    assert value == pytest.approx(expected[0], rel=1e-6, abs=1e-9)
    assert solution.objective_value == pytest.approx(value, rel=1e-5, abs=1e-6)


def per_sample_latency(cost: CostModel, tiers: np.ndarray, exit_at: int | None) -> float:
    """Latency of one sample leaving at the exit with index ``exit_at`` (None: final).

    Written out from the stage-by-stage execution, independently of ``evaluate``.
    """
    n = cost.n_nodes
    reached = np.ones(n, dtype=bool)
    if exit_at is not None:
        reached &= ~descendants(cost, int(cost.exit_nodes[exit_at]))
    total = sum(cost.compute_ms[i, tiers[i]] for i in range(n) if reached[i])
    for link in range(cost.n_tiers - 1):
        up = 0.0
        for u in range(n):
            users = [
                v
                for s, v in zip(cost.edge_src, cost.edge_dst, strict=True)
                if s == u and reached[v]
            ]
            if reached[u] and tiers[u] <= link and any(tiers[v] > link for v in users):
                up += cost.out_bytes[u]
        if exit_at is None:
            down = sum(cost.out_bytes[o] for o in cost.output_nodes if tiers[o] > link)
        else:
            down = cost.exit_out_bytes[exit_at] * (tiers[cost.exit_nodes[exit_at]] > link)
        total += up * cost.up_ms_per_byte[link] + down * cost.down_ms_per_byte[link]
        if any(tiers[i] > link for i in range(n) if reached[i]):
            total += cost.rtt_ms[link] + cost.service_ms[link + 1]
    return float(total + cost.service_ms[0])


# -- the MILP is optimal for the expected cost ------------------------------------------
@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n_nodes=st.integers(2, 9),
    n_tiers=st.integers(2, 4),
    objective=objectives,
    chain=st.booleans(),
)
def test_planner_matches_brute_force_on_expected_cost_with_articulation_exits(
    seed, n_nodes, n_tiers, objective, chain
):
    cost = random_exit_instance(
        np.random.default_rng(seed), n_nodes=n_nodes, n_tiers=n_tiers, chain=chain
    )
    assert_solver_matches_brute_force(cost, objective)


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n_nodes=st.integers(2, 9),
    n_tiers=st.integers(2, 4),
    objective=objectives,
    memory=st.booleans(),
    pins=st.integers(0, 2),
    slo=st.booleans(),
)
def test_planner_matches_brute_force_on_expected_cost_with_constraints(
    seed, n_nodes, n_tiers, objective, memory, pins, slo
):
    cost = random_exit_instance(
        np.random.default_rng(seed),
        n_nodes=n_nodes,
        n_tiers=n_tiers,
        memory=memory,
        pins=pins,
        slo=slo,
    )
    assert_solver_matches_brute_force(cost, objective)


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n_nodes=st.integers(2, 9),
    n_tiers=st.integers(2, 4),
    objective=objectives,
)
def test_planner_matches_brute_force_for_any_reach_weights(seed, n_nodes, n_tiers, objective):
    # The encoding is exact for the cost model's definition whatever the weights are, not
    # only for weights that come from articulation exits.
    rng = np.random.default_rng(seed)
    cost = random_cost_model(rng, n_nodes=n_nodes, n_tiers=n_tiers)
    levels = rng.choice([0.0, 0.25, 0.5, 1.0], size=n_nodes)
    exits = rng.choice(n_nodes, size=int(rng.integers(0, 3)), replace=False).astype(np.int64)
    cost = _replace(
        cost,
        reach=levels,
        exit_nodes=exits,
        exit_rates=rng.uniform(0, 0.5, len(exits)),
        exit_out_bytes=rng.uniform(0, 1e4, len(exits)),
    )
    assert_solver_matches_brute_force(cost, objective)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), objective=st.sampled_from(["latency", "bytes"]))
def test_expected_cost_keeps_the_lp_relaxation_integral(seed, objective):
    # Reach levels keep the closure structure, so large graphs still plan at LP speed.
    cost = random_exit_instance(np.random.default_rng(seed), n_nodes=40, n_tiers=3)
    assert solve(cost, Objective.parse(objective)).method == "lp"


# -- with every weight 1 nothing changes ----------------------------------------------------
@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n_nodes=st.integers(2, 9),
    n_tiers=st.integers(2, 4),
    objective=objectives,
)
def test_weights_of_one_give_the_cost_of_one_full_input(seed, n_nodes, n_tiers, objective):
    # Arrange: the same instance, once plain and once with explicit weights of 1.
    cost = random_cost_model(np.random.default_rng(seed), n_nodes=n_nodes, n_tiers=n_tiers)
    weighted = _replace(
        cost,
        reach=np.ones(n_nodes),
        exit_nodes=np.array([n_nodes - 1], dtype=np.int64),
        exit_rates=np.zeros(1),
        exit_out_bytes=np.array([1e3]),
    )
    goal = Objective.parse(objective)
    # Act
    plain, expected = solve(cost, goal), solve(weighted, goal)
    # Assert: same optimum, and the same prediction for any placement.
    assert expected.objective_value == pytest.approx(plain.objective_value, rel=1e-9)
    for tiers in (plain.tiers, expected.tiers):
        a, b = evaluate(cost, tiers), evaluate(weighted, tiers)
        assert b.latency_ms == pytest.approx(a.latency_ms, rel=1e-12)
        assert b.bytes_per_link == pytest.approx(a.bytes_per_link, rel=1e-12)
        assert b.throughput_rps == pytest.approx(a.throughput_rps, rel=1e-12)
        if a.energy_mj is not None:
            assert b.energy_mj == pytest.approx(a.energy_mj, rel=1e-12)


# -- the expectation is the average over exit outcomes -----------------------------------
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_nodes=st.integers(2, 8), n_tiers=st.integers(2, 4))
def test_expected_latency_is_the_average_over_exit_outcomes(seed, n_nodes, n_tiers):
    # Arrange: a random instance and a random valid placement.
    rng = np.random.default_rng(seed)
    cost = random_exit_instance(rng, n_nodes=n_nodes, n_tiers=n_tiers)
    tiers = np.zeros(n_nodes, dtype=np.int64)
    for node in range(1, n_nodes):
        lowest = max(tiers[cost.edge_src[cost.edge_dst == node]], default=0)
        tiers[node] = rng.integers(lowest, n_tiers)
    # Act
    predicted = evaluate(cost, tiers).latency_ms
    # Assert: Σ_outcomes P(outcome) · latency(outcome), enumerated explicitly.
    final_rate = 1.0 - cost.exit_rates.sum()
    enumerated = final_rate * per_sample_latency(cost, tiers, None)
    for e, rate in enumerate(cost.exit_rates):
        enumerated += rate * per_sample_latency(cost, tiers, e)
    assert predicted == pytest.approx(enumerated, rel=1e-9)


def test_worst_case_is_one_input_that_no_exit_answers():
    cost = random_exit_instance(np.random.default_rng(7), n_nodes=8, n_tiers=3)
    tiers = solve(cost, Objective.parse("latency")).tiers
    worst = evaluate(worst_case_cost_model(cost), tiers).latency_ms
    # The final classifier answers, after every active head has run.
    assert worst == pytest.approx(per_sample_latency(cost, tiers, None), rel=1e-12)


def test_an_exit_that_a_later_node_bypasses_is_rejected_with_its_name():
    cost = random_cost_model(np.random.default_rng(1), n_nodes=4, n_tiers=2)
    cost = _replace(
        cost,
        edge_src=np.array([0, 1, 0, 2], dtype=np.int64),
        edge_dst=np.array([1, 2, 3, 3], dtype=np.int64),
        output_nodes=np.array([3], dtype=np.int64),
    )
    with pytest.raises(PlanError, match=r"exit .early.*n1.*not an articulation"):
        check_articulation(cost, 1, exit_name="early")


# -- plan_with_exits on a real model ---------------------------------------------------
@pytest.fixture(scope="module")
def lenet():
    return capture(*resolve_model("zoo:lenet"), name="zoo:lenet")


def two_tiers(bandwidth_mbps: float = 20.0):
    """A very slow phone (LeNet's FLOP estimate takes ~40 ms there) and a fast cloud."""
    return topology_from_dict(
        {
            "tiers": [
                {"name": "phone", "kind": "device", "compute": {"speed": 0.0002}},
                {"name": "cloud", "kind": "cloud", "compute": {"speed": 4.0}},
            ],
            "links": [
                {"from": "phone", "to": "cloud", "bandwidth_mbps": bandwidth_mbps, "rtt_ms": 30}
            ],
        }
    )


def lenet_options() -> ExitOptions:
    heads = (
        ExitHead("exit1", "pool1", 40.0, 0.0002, 1000),
        ExitHead("exit2", "pool2", 40.0, 0.0001, 500),
    )
    return ExitOptions(
        policy="max_softmax",
        heads=heads,
        settings=(
            ExitSetting({"exit1": 0.9}, {"exit1": 0.7, "final": 0.3}, 0.95),
            ExitSetting({"exit2": 0.8}, {"exit2": 0.6, "final": 0.4}, 0.975),
            ExitSetting(
                {"exit1": 0.99, "exit2": 0.9},
                {"exit1": 0.3, "exit2": 0.3, "final": 0.4},
                0.97,
            ),
            ExitSetting({"exit1": 0.5}, {"exit1": 0.95, "final": 0.05}, 0.90),
        ),
        final_accuracy=0.98,
    )


def solved_settings(lenet, topology, options, objective="latency"):
    """(accuracy, expected latency, objective value) of every setting, "no exit" first."""
    base = cost_model_for(
        lenet,
        topology,
        profile=None,
        tier_profiles=None,
        constraints=Constraints(),
        service_ms=None,
    )
    instances = ExitInstances(lenet, topology, options, base, profile=None)
    goal = Objective.parse(objective)
    rows = []
    for setting in (instances.no_exit(), *options.settings):
        cost = instances.cost(setting, source="test")
        prediction = evaluate(cost, solve(cost, goal).tiers)
        rows.append((setting, prediction.latency_ms, prediction.cost(goal, link_weights(cost))))
    return rows


def test_plan_with_exits_picks_the_lowest_expected_cost_within_the_accuracy_drop(lenet):
    options = lenet_options()
    topology = two_tiers()
    rows = solved_settings(lenet, topology, options)
    admissible = [r for r in rows if r[0].accuracy >= options.final_accuracy - 0.04 - 1e-12]
    best = min(admissible, key=lambda r: (r[2], -r[0].accuracy))
    result = plan_with_exits(lenet, topology, options, max_accuracy_drop_pp=4.0)
    assert result.predicted.latency_ms == pytest.approx(best[1], rel=1e-9)
    assert result.accuracy == best[0].accuracy
    assert chosen_setting(result, options) == best[0]
    assert result.solver["exit_settings_tried"] == len(admissible)


def test_latency_target_picks_the_most_accurate_setting_that_meets_it(lenet):
    options = lenet_options()
    topology = two_tiers()
    rows = solved_settings(lenet, topology, options)
    latencies = sorted(r[1] for r in rows)
    target = (latencies[1] + latencies[2]) / 2  # some settings meet it, some do not
    meeting = [r for r in rows if r[1] <= target]
    result = plan_with_exits(lenet, topology, options, latency_target_ms=target)
    assert result.accuracy == max(r[0].accuracy for r in meeting)
    assert result.predicted.latency_ms <= target


@pytest.mark.parametrize("objective", ["bytes", "latency=1,bytes=5"])
def test_latency_target_bounds_the_placement_under_any_objective(lenet, objective):
    # A setting can meet the target exactly when its least expected latency does.
    options = lenet_options()
    rows = solved_settings(lenet, two_tiers(), options)
    latencies = sorted(r[1] for r in rows)
    target = (latencies[1] + latencies[2]) / 2
    result = plan_with_exits(
        lenet, two_tiers(), options, objective=objective, latency_target_ms=target
    )
    assert result.accuracy == max(r[0].accuracy for r in rows if r[1] <= target)
    assert result.predicted.latency_ms <= target * (1 + 1e-9)
    with pytest.raises(InfeasiblePlanError, match=f"expected latency is {latencies[0]:.2f}"):
        plan_with_exits(
            lenet, two_tiers(), options, objective=objective, latency_target_ms=latencies[0] / 2
        )


def test_an_unreachable_latency_target_names_the_best_expected_latency(lenet):
    rows = solved_settings(lenet, two_tiers(), lenet_options())
    best = min(r[1] for r in rows)
    with pytest.raises(
        InfeasiblePlanError, match=f"best achievable expected latency is {best:.2f}"
    ):
        plan_with_exits(lenet, two_tiers(), lenet_options(), latency_target_ms=best * 0.9)


def test_exit_plan_records_exits_worst_case_and_round_trips_through_json(lenet):
    result = plan_with_exits(lenet, two_tiers(), lenet_options())
    assert result.exits, "some exit setting beats no exit on this slow phone"
    for planned in result.exits:
        assert result.assignment[planned.node] == planned.tier
    assert result.worst_case is not None
    assert result.worst_case.latency_ms >= result.predicted.latency_ms
    assert Plan.from_json(result.to_json()) == result
    assert "expected" in str(result) and "worst case" in str(result)


def test_exit_aware_plan_is_never_worse_than_the_exit_unaware_one(lenet):
    options = lenet_options()
    for bandwidth in (0.5, 2.0, 20.0):
        topology = two_tiers(bandwidth)
        aware = plan_with_exits(lenet, topology, options)
        unaware = exit_unaware_plan(lenet, topology, options, aware)
        assert aware.predicted.latency_ms <= unaware.predicted.latency_ms * (1 + 1e-9)
        recorded = aware.solver["exit_unaware"]["latency_ms"]
        assert recorded == pytest.approx(unaware.predicted.latency_ms, rel=1e-9)


def test_without_settings_the_exit_planner_equals_the_plain_planner(lenet):
    options = ExitOptions("max_softmax", lenet_options().heads, (), 0.98)
    topology = two_tiers()
    aware, plain = plan_with_exits(lenet, topology, options), plan(lenet, topology)
    assert aware.assignment == plain.assignment
    assert aware.predicted == plain.predicted
    assert aware.exits == () and aware.accuracy == 0.98


# -- the command -------------------------------------------------------------------------
def test_plan_command_with_exits_shows_and_writes_the_exits(tmp_path: Path):
    exits_file = tmp_path / "exits.json"
    lenet_options().save(exits_file)
    runner = CliRunner()
    args = ["plan", "zoo:lenet", "--topology", str(THREE_TIERS), "--runs", "2",
            "--exits", str(exits_file), "--max-accuracy-drop", "1.5"]  # fmt: skip
    as_json = runner.invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["accuracy"] >= 0.98 - 0.015
    assert data["worst_case"] is not None
    assert {"exit_setting", "exit_settings_tried"} <= set(data["solver"])
    shown = runner.invoke(app, args)
    assert shown.exit_code == 0, shown.output
    assert "expected" in shown.output and "worst case" in shown.output
