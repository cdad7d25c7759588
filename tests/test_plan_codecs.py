"""Codec-aware planning: the placement program with codec choices is optimal for its cost."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tierflow.errors import CodecError, PlanError
from tierflow.graph import capture
from tierflow.models import resolve_model
from tierflow.plan import Plan, plan
from tierflow.plan.codec_options import CodecCandidate, CodecOptions
from tierflow.plan.codec_planner import link_codecs
from tierflow.plan.cost_model import CostModel, _replace
from tierflow.plan.evaluate import codec_drop_pp, evaluate, link_weights
from tierflow.plan.milp import solve
from tierflow.plan.objective import Objective
from tierflow.plan.variant_planner import plan_with_codecs
from tierflow.topology import load_topology

from plan_instances import monotone_assignments, random_cost_model

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROOT = Path(__file__).parent.parent
THREE_TIERS = ROOT / "examples" / "topologies" / "camera-gateway-cloud.yaml"


# -- random instances and brute force -------------------------------------------------------
def with_random_codecs(
    cost: CostModel, rng: np.random.Generator, *, budget: float | None
) -> CostModel:
    """``cost`` with 1–2 random codec candidates on up to three random nodes.

    The last node is pinned to the top tier, so some value must cross every link and
    the codecs matter for every objective (the bytes optimum is otherwise all-local).
    """
    nodes = rng.choice(cost.n_nodes, size=min(3, cost.n_nodes), replace=False)
    node_of = [int(n) for n in nodes for _ in range(int(rng.integers(1, 3)))]
    k = len(node_of)
    lossy = rng.random(k) < 0.6
    allowed = cost.allowed.copy()
    allowed[-1, :-1] = False
    return _replace(
        cost,
        allowed=allowed,
        codec_specs=tuple(f"codec{i}" for i in range(k)),
        codec_node=np.array(node_of, dtype=np.int64),
        codec_ratio=rng.uniform(0.05, 1.2, k),
        codec_encode_ms=rng.uniform(0.0, 1.0, (k, cost.n_tiers)) * rng.choice([0.1, 10.0]),
        codec_decode_ms=rng.uniform(0.0, 1.0, (k, cost.n_tiers)),
        codec_drop_pp=np.where(lossy, rng.uniform(0.0, 1.5, k), 0.0),
        max_codec_drop_pp=budget,
    )


def codec_choices(cost: CostModel, tiers: np.ndarray) -> Iterator[np.ndarray]:
    """Every codec choice (raw or one candidate of the value) for each crossing of ``tiers``."""
    highest_user = tiers.copy()
    np.maximum.at(highest_user, cost.edge_src, tiers[cost.edge_dst])
    links = np.arange(cost.n_tiers - 1)
    crosses = (tiers[:, None] <= links) & (highest_user[:, None] > links)
    slots = [(int(n), int(link)) for n, link in zip(*np.nonzero(crosses), strict=True)]
    options = [[-1, *np.flatnonzero(cost.codec_node == n).tolist()] for n, _ in slots]
    for pick in itertools.product(*options):
        codecs = np.full((cost.n_nodes, len(links)), -1, dtype=np.int64)
        for (n, link), k in zip(slots, pick, strict=True):
            codecs[n, link] = k
        yield codecs


def brute_force(cost: CostModel, objective: Objective) -> float | None:
    """Lowest objective over monotone assignments × codec choices, None if none is feasible."""
    weights = link_weights(cost)
    best: float | None = None
    for tiers in monotone_assignments(cost):
        for codecs in codec_choices(cost, tiers):
            prediction = evaluate(cost, tiers, codecs)
            if prediction.feasible:
                value = prediction.cost(objective, weights)
                best = value if best is None else min(best, value)
    return best


def assert_matches_brute_force(cost: CostModel, spec: str) -> None:
    objective = Objective.parse(spec)
    expected = brute_force(cost, objective)
    assert expected is not None  # raw bytes everywhere keeps the codec-free optimum feasible
    solution = solve(cost, objective)
    prediction = evaluate(cost, solution.tiers, solution.codecs)
    assert prediction.feasible, prediction.violations
    value = prediction.cost(objective, link_weights(cost))
    assert value == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert solution.objective_value == pytest.approx(value, rel=1e-6, abs=1e-6)


budgets = st.one_of(st.just(0.0), st.floats(0.0, 2.5), st.none())


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    n_nodes=st.integers(2, 5),
    n_tiers=st.integers(2, 3),
    objective=st.sampled_from(["latency", "bytes"]),
    budget=budgets,
)
def test_planner_with_codecs_matches_brute_force(seed, n_nodes, n_tiers, objective, budget):
    rng = np.random.default_rng(seed)
    cost = random_cost_model(rng, n_nodes=n_nodes, n_tiers=n_tiers)
    cost = with_random_codecs(cost, rng, budget=budget)
    assert_matches_brute_force(cost, objective)


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    n_nodes=st.integers(2, 5),
    objective=st.sampled_from(
        ["energy", "throughput", "latency=1,energy=0.5", "latency=0.3,bytes=2,throughput=1"]
    ),
    budget=budgets,
)
def test_planner_with_codecs_matches_brute_force_for_other_objectives(
    seed, n_nodes, objective, budget
):
    rng = np.random.default_rng(seed)
    cost = random_cost_model(rng, n_nodes=n_nodes, n_tiers=3)
    cost = with_random_codecs(cost, rng, budget=budget)
    assert_matches_brute_force(cost, objective)


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), n_nodes=st.integers(3, 5), budget=budgets)
def test_planner_with_codecs_matches_brute_force_under_memory_and_slo(seed, n_nodes, budget):
    rng = np.random.default_rng(seed)
    cost = random_cost_model(rng, n_nodes=n_nodes, n_tiers=3, memory=True, slo=True)
    cost = with_random_codecs(cost, rng, budget=budget)
    objective = Objective.parse("bytes")
    expected = brute_force(cost, objective)
    if expected is None:
        with pytest.raises(PlanError):
            solve(cost, objective)
        return
    solution = solve(cost, objective)
    prediction = evaluate(cost, solution.tiers, solution.codecs)
    assert prediction.feasible, prediction.violations
    assert prediction.cost(objective, link_weights(cost)) == pytest.approx(
        expected, rel=1e-6, abs=1e-6
    )


# -- the choice itself ----------------------------------------------------------------------
def two_node_instance(mbps: float, *, drop: float = 0.0, budget: float = 1.0) -> CostModel:
    """The input on the first tier feeds a node pinned to the second: one 1 MB crossing."""
    rng = np.random.default_rng(0)
    cost = random_cost_model(rng, n_nodes=2, n_tiers=2, power=False)
    allowed = np.array([[True, False], [False, True]])
    return _replace(
        cost,
        allowed=allowed,
        out_bytes=np.array([1e6, 1e3]),
        up_ms_per_byte=np.array([8.0 / (mbps * 1e3)]),
        codec_specs=("int8+zstd",),
        codec_node=np.array([0], dtype=np.int64),
        codec_ratio=np.array([0.25]),
        codec_encode_ms=np.array([[5.0, 5.0]]),
        codec_decode_ms=np.array([[1.0, 1.0]]),
        codec_drop_pp=np.array([drop]),
        max_codec_drop_pp=budget,
    )


def test_a_lossless_codec_is_chosen_on_a_slow_link():
    # Arrange: 1 MB at 10 Mbit/s is 800 ms raw, 200 ms compressed, for 6 ms of codec time.
    cost = two_node_instance(10.0)
    # Act
    solution = solve(cost, Objective.parse("latency"))
    # Assert
    assert link_codecs(cost, solution.codecs) == {"t0": {"n0": "int8+zstd"}}


def test_a_codec_is_not_chosen_on_a_fast_link_where_encoding_costs_more_than_it_saves():
    # Arrange: 1 MB at 10 Gbit/s is 0.8 ms raw; the codec saves 0.6 ms for 6 ms.
    cost = two_node_instance(10_000.0)
    # Act
    solution = solve(cost, Objective.parse("latency"))
    # Assert
    assert link_codecs(cost, solution.codecs) == {}


def test_a_zero_budget_forbids_a_lossy_codec_however_much_it_saves():
    # Arrange
    cost = two_node_instance(10.0, drop=0.01, budget=0.0)
    # Act
    solution = solve(cost, Objective.parse("latency"))
    # Assert
    assert link_codecs(cost, solution.codecs) == {}
    assert codec_drop_pp(cost, solution.codecs) == 0.0


def test_a_lossy_codec_within_the_budget_is_chosen_and_its_drop_counted():
    cost = two_node_instance(10.0, drop=0.4, budget=0.5)
    solution = solve(cost, Objective.parse("latency"))
    assert link_codecs(cost, solution.codecs) == {"t0": {"n0": "int8+zstd"}}
    assert codec_drop_pp(cost, solution.codecs) == pytest.approx(0.4)


def test_evaluate_rejects_a_codec_on_a_value_that_does_not_cross_the_link():
    cost = two_node_instance(10.0)
    with pytest.raises(ValueError, match="does not cross"):
        evaluate(cost, np.array([0, 0]), np.array([[0], [-1]]))


# -- end to end on a real graph -------------------------------------------------------------
@pytest.fixture(scope="module")
def lenet():
    return capture(*resolve_model("zoo:lenet"), name="zoo:lenet")


def _without_timing(p: Plan) -> dict:
    document = p.to_dict()
    document["solver"].pop("solve_ms")
    return document


def test_without_candidates_the_plan_is_that_of_plan(lenet):
    topology = load_topology(THREE_TIERS)
    ours = plan_with_codecs(lenet, topology, CodecOptions(()))
    theirs = plan(lenet, topology)
    assert _without_timing(ours) == _without_timing(theirs)
    assert "link_codecs" not in ours.to_dict()


def test_codec_plan_records_its_choice_and_round_trips_through_json(lenet):
    # Arrange: a free, lossless 10x codec on every value, over links that are not free.
    topology = load_topology(THREE_TIERS)
    options = CodecOptions(
        tuple(CodecCandidate(node.name, "int8+zstd", 0.1, 0.0, 0.0, 0.0) for node in lenet.nodes)
    )
    raw = plan(lenet, topology, objective="bytes")
    # Act
    result = plan_with_codecs(lenet, topology, options, objective="bytes")
    # Assert
    assert result.codec_accuracy_drop_pp == 0.0
    crossing = {(cut.link.split("->")[0], t) for cut in result.cuts for t in cut.tensors}
    chosen = {(tier, v) for tier, values in result.link_codecs.items() for v in values}
    assert chosen == crossing
    assert sum(result.predicted.bytes_per_link.values()) <= sum(
        raw.predicted.bytes_per_link.values()
    )
    assert Plan.from_json(result.to_json()) == result
    assert "codec" in str(result)


def test_codec_options_round_trip_through_json(tmp_path):
    options = CodecOptions(
        (
            CodecCandidate("pool2", "int8+zstd", 0.2, 0.4, 0.3, 0.1),
            CodecCandidate("pool2", "fp16", 0.5, 0.1, 0.1, 0.0),
        )
    )
    options.save(tmp_path / "codecs.json")
    assert CodecOptions.load(tmp_path / "codecs.json") == options


def test_codec_options_name_the_field_at_fault():
    with pytest.raises(CodecError, match=r"candidates\.0\.ratio"):
        CodecOptions((CodecCandidate("pool2", "fp16", -1.0, 0.0, 0.0, 0.0),))
    with pytest.raises(CodecError, match=r"candidates\.1: codec 'fp16' for node 'pool2'"):
        CodecOptions(
            (
                CodecCandidate("pool2", "fp16", 0.5, 0.0, 0.0, 0.0),
                CodecCandidate("pool2", "fp16", 0.5, 0.0, 0.0, 0.0),
            )
        )


def test_codec_options_read_from_json_name_the_candidate_at_fault():
    with pytest.raises(CodecError, match=r"candidates\.0: missing field 'ratio'"):
        CodecOptions.from_dict(
            {"tierflow_codecs_version": 1, "candidates": [{"node": "a", "codec": "fp16"}]}
        )


def test_a_candidate_on_an_unknown_node_is_an_error_naming_it(lenet):
    options = CodecOptions((CodecCandidate("nope", "fp16", 0.5, 0.0, 0.0, 0.0),))
    with pytest.raises(PlanError, match=r"candidates\.0: node 'nope'"):
        plan_with_codecs(lenet, load_topology(THREE_TIERS), options)
