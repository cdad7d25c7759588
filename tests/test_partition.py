"""Splitting a model by a tier assignment preserves what it computes."""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from functools import cache
from typing import Any, NamedTuple

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from tierflow.errors import PartitionError
from tierflow.graph import LayerGraph, Traced, describe, trace
from tierflow.models import resolve_model
from tierflow.partition import Segment, check_monotone, run_split, split_traced

ZOO_MODELS = ["lenet", "resnet_mini", "inception_mini", "gru", "lstm", "transformer"]
TORCHVISION_MODELS = ["resnet18", "googlenet", "densenet121"]
TIER_NAMES = ("device", "gateway", "edge", "cloud")
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Case(NamedTuple):
    model: nn.Module
    inputs: tuple[torch.Tensor, ...]
    traced: Traced
    graph: LayerGraph
    expected: Any


@cache
def _traced(spec: str, input_shape: tuple[int, ...] | None = None) -> Case:
    model, inputs = resolve_model(spec, input_shape=input_shape)
    traced = trace(model, inputs)
    graph = describe(traced, inputs, name=spec)
    with torch.no_grad():
        expected = model(*inputs)
    return Case(model, inputs, traced, graph, expected)


def random_monotone_assignment(
    graph: LayerGraph, tiers: Sequence[str], rng: random.Random
) -> dict[str, str]:
    """Each node goes to its highest producer's tier or, about three times per graph, to
    a strictly higher one; so most draws use several tiers and cut in several places."""
    jump = min(0.5, 3 / len(graph))
    top = len(tiers) - 1
    rank: dict[str, int] = {}
    for node in graph:
        low = max((rank[p] for p in node.inputs), default=0)
        rank[node.name] = rng.randint(low + 1, top) if low < top and rng.random() < jump else low
    return {name: tiers[position] for name, position in rank.items()}


def _assert_split_matches(case: Case, tiers: Sequence[str], seed: int) -> None:
    assignment = random_monotone_assignment(case.graph, tiers, random.Random(seed))
    split = split_traced(case.traced, assignment, tiers)
    with torch.no_grad():
        actual = run_split(split, *case.inputs)
    torch.testing.assert_close(actual, case.expected)


@pytest.mark.parametrize("name", ZOO_MODELS)
@SETTINGS
@given(tier_count=st.integers(2, 4), seed=st.integers(0, 2**32 - 1))
def test_split_zoo_model_equals_unsplit_model(name: str, tier_count: int, seed: int) -> None:
    _assert_split_matches(_traced(f"zoo:{name}"), TIER_NAMES[:tier_count], seed)


@pytest.mark.slow
@pytest.mark.parametrize("name", TORCHVISION_MODELS)
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tier_count=st.integers(2, 4), seed=st.integers(0, 2**32 - 1))
def test_split_torchvision_model_equals_unsplit_model(
    name: str, tier_count: int, seed: int
) -> None:
    case = _traced(f"torchvision:{name}", (1, 3, 64, 64))
    _assert_split_matches(case, TIER_NAMES[:tier_count], seed)


def test_every_two_tier_cut_of_a_chain_equals_unsplit_model() -> None:
    case = _traced("zoo:lenet")
    names = [n.name for n in case.graph]

    for cut in range(len(names) + 1):
        assignment = {n: "device" if i < cut else "cloud" for i, n in enumerate(names)}
        with torch.no_grad():
            actual = run_split(
                split_traced(case.traced, assignment, ["device", "cloud"]), *case.inputs
            )
        torch.testing.assert_close(actual, case.expected, msg=f"cut before node {cut}")


def test_split_of_exported_model_equals_unsplit_model() -> None:
    model, inputs = resolve_model("zoo:transformer")
    traced = trace(model, inputs, tracer="export")
    graph = describe(traced, inputs, name="zoo:transformer")
    assignment = random_monotone_assignment(graph, TIER_NAMES[:3], random.Random(7))

    split = split_traced(traced, assignment, TIER_NAMES[:3])

    with torch.no_grad():
        torch.testing.assert_close(split(*inputs), model(*inputs))


class Fork(nn.Module):
    """One stem value read by three nodes, and a size crossing tiers as a Python int."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 4)
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = self.stem(x)
        batch = x.size(0)
        mixed = (self.a(h) + self.b(h) * h).reshape(batch, -1)
        return mixed, {"stem": h, "scaled": mixed * 2}


def _fork_split(**overrides: str) -> tuple[Fork, torch.Tensor, Any]:
    torch.manual_seed(0)
    model, x = Fork().eval(), torch.randn(3, 4)
    traced = trace(model, (x,))
    graph = describe(traced, (x,), name="fork")
    assignment = {n.name: "device" for n in graph} | {
        n.name: "cloud" for n in graph if n.name not in ("x", "stem", "size")
    }
    return model, x, split_traced(traced, assignment | overrides, ["device", "cloud"])


def test_shared_value_read_by_several_higher_tier_nodes_is_one_segment_input() -> None:
    _, _, split = _fork_split()

    cloud = list(split)[1]

    assert cloud.input_names.count("stem") == 1
    assert sorted(cloud.input_names) == ["size", "stem"]


def test_python_int_crossing_tiers_and_nested_outputs_round_trip() -> None:
    model, x, split = _fork_split()

    actual = run_split(split, x)

    assert isinstance(actual, tuple) and isinstance(actual[1], dict)
    torch.testing.assert_close(actual, model(x))


def test_run_split_accepts_bare_segments_and_returns_final_values() -> None:
    model, x, split = _fork_split()
    segments: list[Segment] = list(split)

    actual = run_split(segments, x)

    torch.testing.assert_close(actual[0], model(x)[0])


def test_non_monotone_assignment_raises_partition_error_naming_the_node() -> None:
    with pytest.raises(PartitionError, match=r"node 'a' is assigned to tier 'device'.*'stem'"):
        _fork_split(stem="cloud", a="device")


def test_unassigned_node_raises_partition_error_naming_the_node() -> None:
    case = _traced("zoo:lenet")
    assignment = {n.name: "device" for n in case.graph if n.name != "fc2"}

    with pytest.raises(PartitionError, match="'fc2' is not assigned"):
        split_traced(case.traced, assignment, ["device"])


def test_unknown_tier_raises_partition_error_naming_node_and_tier() -> None:
    case = _traced("zoo:lenet")
    assignment = {n.name: "device" for n in case.graph} | {"fc3": "moon"}

    with pytest.raises(PartitionError, match="'fc3' is assigned to unknown tier 'moon'"):
        split_traced(case.traced, assignment, ["device", "cloud"])


def test_check_monotone_accepts_a_layer_graph() -> None:
    case = _traced("zoo:lenet")
    assignment = {n.name: "cloud" for n in case.graph} | {"x": "device"}

    check_monotone(case.graph, assignment, ["device", "cloud"])


def test_tiers_without_nodes_get_no_segment() -> None:
    case = _traced("zoo:lenet")
    assignment = {n.name: "cloud" for n in case.graph} | {"x": "device"}

    split = split_traced(case.traced, assignment, ["device", "edge", "cloud"])

    assert split.tiers == ("device", "cloud")


def test_splitting_leaves_the_users_model_unchanged() -> None:
    model, inputs = resolve_model("zoo:resnet_mini")
    model.train()
    before = copy.deepcopy(model.state_dict())
    traced = trace(model, inputs)
    graph = describe(traced, inputs, name="zoo:resnet_mini")
    assignment = random_monotone_assignment(graph, TIER_NAMES, random.Random(3))

    split = split_traced(traced, assignment, TIER_NAMES)
    with torch.no_grad():
        run_split(split, *inputs)

    assert model.training
    torch.testing.assert_close(model.state_dict(), before)


def test_segments_own_their_parameters() -> None:
    model, inputs = resolve_model("zoo:lenet")
    traced = trace(model, inputs)
    assignment = {n.name: "device" for n in describe(traced, inputs)} | {"fc3": "cloud"}
    device = next(iter(split_traced(traced, assignment, ["device", "cloud"])))

    with torch.no_grad():
        for parameter in device.parameters():
            parameter.zero_()

    assert all(p.abs().sum() > 0 for p in model.parameters())
    assert all(p.abs().sum() > 0 for p in traced.module.parameters())
