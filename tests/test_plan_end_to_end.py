"""From a real model to a plan and back: plans are optimal, round-trip, and split correctly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tierflow
from tierflow.errors import InfeasiblePlanError, PlanError
from tierflow.plan import Plan

TOPOLOGIES = Path(__file__).parent.parent / "examples" / "topologies"
FOUR_TIERS = TOPOLOGIES / "sensor-phone-edge-cloud.yaml"
THREE_TIERS = TOPOLOGIES / "camera-gateway-cloud.yaml"


def _plan(spec: str, topology: Path, *, shape=None, overrides=(), **options) -> tuple:
    model, inputs = tierflow.resolve_model(spec, input_shape=shape)
    graph = tierflow.capture(model, inputs, name=spec)
    topo = tierflow.load_topology(topology, overrides=overrides)
    return model, inputs, graph, tierflow.plan(graph, topo, **options)


def _assert_split_equals_model(model, plan: Plan, inputs) -> None:
    segments = tierflow.split(model, plan, inputs)
    with torch.inference_mode():
        expected = model(*inputs)
        actual = tierflow.run_split(segments, *inputs)
    torch.testing.assert_close(actual, expected)


MODELS = [
    ("zoo:transformer", None),
    ("zoo:gru", None),
    ("zoo:inception_mini", None),
    pytest.param("torchvision:googlenet", (1, 3, 64, 64), marks=pytest.mark.slow),
    pytest.param("torchvision:densenet121", (1, 3, 64, 64), marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("spec", "shape"), MODELS)
@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_dag_models_plan_on_four_tiers_and_split_to_the_same_output(spec, shape, objective):
    model, inputs, _, plan = _plan(
        spec,
        FOUR_TIERS,
        shape=shape,
        overrides=["tiers.sensor.memory_mb=4096"],
        objective=objective,
    )
    assert set(plan.assignment.values()) <= set(plan.tiers)
    _assert_split_equals_model(model, plan, inputs)


def test_throughput_objective_spreads_a_model_over_several_tiers():
    _, _, _, plan = _plan("zoo:resnet_mini", FOUR_TIERS, objective="throughput")
    assert len(plan.segments()) >= 2


@pytest.mark.parametrize("objective", ["latency", "energy", "bytes", "throughput"])
def test_plan_is_no_worse_than_any_feasible_baseline(objective):
    _, _, _, plan = _plan("zoo:resnet_mini", THREE_TIERS, objective=objective)
    weights = dict.fromkeys(plan.predicted.bytes_per_link, 1.0)
    objective_ = tierflow.Objective.parse(objective)
    mine = plan.predicted.cost(objective_, weights)
    for name, baseline in plan.feasible_baselines().items():
        assert mine <= baseline.prediction.cost(objective_, weights) * (1 + 1e-9), name


def test_plan_json_round_trip_gives_an_equal_plan():
    _, _, _, plan = _plan("zoo:lenet", THREE_TIERS, private_input=True, slo_ms=1e6)
    again = Plan.from_json(plan.to_json())
    assert again == plan
    data = plan.to_dict()
    for key in ("tierflow_plan_version", "model", "objective", "tiers", "assignment", "cuts"):
        assert key in data
    assert set(data["predicted"]) >= {"latency_ms", "energy_mj", "bytes_per_link", "throughput_rps"}


def test_private_input_keeps_every_reader_of_the_raw_input_on_the_first_tier():
    # A fast cloud and a fat pipe: without the constraint everything would be offloaded.
    overrides = [
        "links.0.bandwidth_mbps=10000",
        "links.0.rtt_ms=0",
        "tiers.camera.compute.speed=0.001",
    ]
    _, _, graph, free = _plan("zoo:lenet", THREE_TIERS, overrides=overrides)
    _, _, _, private = _plan("zoo:lenet", THREE_TIERS, overrides=overrides, private_input=True)
    first = free.tiers[0]
    assert all(free.assignment[n.name] != first for n in graph.nodes if n.op != "placeholder")
    for consumer in graph.consumers[graph.inputs[0]]:
        assert private.assignment[consumer] == first
    assert private.baselines["all-datacenter"].prediction.feasible is False


def test_pinned_node_runs_where_it_is_pinned_and_its_consumers_above_it():
    _, _, _, plan = _plan("zoo:lenet", THREE_TIERS, pins={"conv2": "datacenter"})
    assert plan.assignment["conv2"] == "datacenter"
    for later in ("relu_1", "pool2", "fc1", "fc3"):
        assert plan.assignment[later] == "datacenter"


def test_latency_slo_that_no_placement_meets_names_the_slo():
    with pytest.raises(InfeasiblePlanError, match="SLO"):
        _plan("zoo:lenet", THREE_TIERS, slo_ms=1e-6)


def test_pin_to_unknown_node_is_refused():
    with pytest.raises(PlanError, match="no_such_node"):
        _plan("zoo:lenet", THREE_TIERS, pins={"no_such_node": "gateway"})


def test_block_granularity_plans_with_fewer_nodes_and_still_splits_exactly():
    model, inputs = tierflow.resolve_model("zoo:resnet_mini")
    fine = tierflow.capture(model, inputs, name="zoo:resnet_mini")
    blocks = tierflow.capture(model, inputs, name="zoo:resnet_mini", granularity="block")
    topology = tierflow.load_topology(THREE_TIERS)
    plan = tierflow.plan(blocks, topology, objective="throughput")
    assert len(blocks) < len(fine)
    assert set(plan.assignment) == {n.name for n in fine.nodes}
    _assert_split_equals_model(model, plan, inputs)


def test_split_refuses_a_plan_made_for_another_model():
    _, _, _, plan = _plan("zoo:lenet", THREE_TIERS)
    other, inputs = tierflow.resolve_model("zoo:resnet_mini")
    with pytest.raises(tierflow.PartitionError, match="does not match"):
        tierflow.split(other, plan, inputs)
