"""The MILP planner is optimal for its cost model: it matches brute-force enumeration."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tierflow.errors import InfeasiblePlanError
from tierflow.plan.cost_model import _replace
from tierflow.plan.evaluate import evaluate, link_weights
from tierflow.plan.milp import solve
from tierflow.plan.objective import Objective

from plan_instances import brute_force, objectives, random_cost_model

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _assert_solver_matches_brute_force(cost, objective_spec: str) -> None:
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
    # The solver's own objective value agrees with the direct evaluation.
    assert solution.objective_value == pytest.approx(value, rel=1e-5, abs=1e-6)


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n_nodes=st.integers(2, 9),
    n_tiers=st.integers(2, 4),
    objective=objectives,
)
def test_planner_matches_brute_force_without_constraints(seed, n_nodes, n_tiers, objective):
    cost = random_cost_model(np.random.default_rng(seed), n_nodes=n_nodes, n_tiers=n_tiers)
    _assert_solver_matches_brute_force(cost, objective)


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n_nodes=st.integers(2, 9),
    n_tiers=st.integers(2, 4),
    objective=objectives,
    memory=st.booleans(),
    private=st.booleans(),
    pins=st.integers(0, 2),
    slo=st.booleans(),
)
def test_planner_matches_brute_force_with_constraints(
    seed, n_nodes, n_tiers, objective, memory, private, pins, slo
):
    cost = random_cost_model(
        np.random.default_rng(seed),
        n_nodes=n_nodes,
        n_tiers=n_tiers,
        memory=memory,
        private=private,
        pins=pins,
        slo=slo,
    )
    _assert_solver_matches_brute_force(cost, objective)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), objective=objectives, constrained=st.booleans())
def test_planner_matches_brute_force_on_fourteen_nodes_and_two_tiers(seed, objective, constrained):
    cost = random_cost_model(
        np.random.default_rng(seed),
        n_nodes=14,
        n_tiers=2,
        memory=constrained,
        private=constrained,
        slo=constrained,
    )
    _assert_solver_matches_brute_force(cost, objective)


def test_shared_value_crosses_a_link_once_however_many_consumers_read_it():
    # Arrange: node 1 feeds three consumers; everything after node 1 is forced upward.
    cost = random_cost_model(np.random.default_rng(3), n_nodes=5, n_tiers=2, power=False)
    cost = _replace(
        cost,
        edge_src=np.array([0, 1, 1, 1, 2, 3], dtype=np.int64),
        edge_dst=np.array([1, 2, 3, 4, 4, 4], dtype=np.int64),
        output_nodes=np.array([4], dtype=np.int64),
    )
    tiers = np.array([0, 0, 1, 1, 1])
    # Act
    prediction = evaluate(cost, tiers)
    # Assert: up bytes are node 1's output once, plus node 4's output coming back down.
    expected = cost.out_bytes[1] + cost.out_bytes[4]
    assert prediction.bytes_per_link[cost.link_names[0]] == pytest.approx(expected)


def test_solver_never_places_a_consumer_below_its_producer():
    cost = random_cost_model(np.random.default_rng(11), n_nodes=40, n_tiers=4)
    tiers = solve(cost, Objective.parse("latency")).tiers
    assert np.all(tiers[cost.edge_src] <= tiers[cost.edge_dst])
    assert np.all(tiers[cost.input_nodes] == 0)


def test_evaluate_rejects_an_assignment_that_sends_data_down():
    cost = random_cost_model(np.random.default_rng(5), n_nodes=3, n_tiers=2)
    tiers = np.ones(3, dtype=np.int64)
    tiers[0] = 0
    tiers[int(cost.edge_dst[-1])] = 0
    if np.all(tiers[cost.edge_src] <= tiers[cost.edge_dst]):
        pytest.skip("random graph happens to admit this assignment")
    with pytest.raises(ValueError, match="down"):
        evaluate(cost, tiers)


def test_infeasible_memory_raises_with_the_constraint_named():
    from tierflow.plan.explain import explain_infeasible

    cost = random_cost_model(np.random.default_rng(2), n_nodes=6, n_tiers=2)
    cost = _replace(cost, memory_bytes=np.array([1.0, 1.0]))
    with pytest.raises(InfeasiblePlanError):
        solve(cost, Objective.parse("latency"))
    assert "memory" in explain_infeasible(cost, Objective.parse("latency"))
