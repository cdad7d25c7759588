"""Profiles: measuring per-node latency, storing it, and turning it into per-tier costs.

No test asserts a timing threshold: timings depend on the machine and its load.
"""

from __future__ import annotations

import itertools
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch

from tierflow.errors import ProfileError
from tierflow.graph import LayerGraph, capture, describe, trace
from tierflow.models import resolve_model
from tierflow.profile import Profile, estimate_profile, profile_model, tier_latency_ms
from tierflow.topology import Topology, topology_from_dict


@cache
def _lenet() -> tuple[LayerGraph, Profile]:
    model, inputs = resolve_model("zoo:lenet")
    traced = trace(model, inputs)
    graph = describe(traced, inputs, name="zoo:lenet")
    profile = profile_model(
        traced, inputs, model_name="zoo:lenet", warmup=1, runs=3, progress=False
    )
    return graph, profile


def _topology(*computes: dict[str, Any]) -> Topology:
    names = [f"tier{i}" for i in range(len(computes))]
    return topology_from_dict(
        {
            "tiers": [
                {"name": name, "kind": "edge", "compute": compute}
                for name, compute in zip(names, computes, strict=True)
            ],
            "links": [
                {"from": a, "to": b, "bandwidth_mbps": 10, "rtt_ms": 5}
                for a, b in itertools.pairwise(names)
            ],
        }
    )


def _host(graph: LayerGraph) -> Profile:
    """A host profile with distinct, known times: node i takes i+1 ms."""
    node_ms = {node.name: float(i + 1) for i, node in enumerate(graph)}
    return Profile("zoo:lenet", "host", 1, 5, node_ms, sum(node_ms.values()))


def test_profile_of_zoo_lenet_has_every_graph_node() -> None:
    graph, profile = _lenet()

    assert set(profile.node_ms) == {node.name for node in graph}
    assert profile.node_ms["x"] == 0.0
    assert profile.whole_ms > 0


def test_profile_json_round_trip_gives_an_equal_profile(tmp_path: Path) -> None:
    _, profile = _lenet()
    path = tmp_path / "lenet.json"

    profile.save(path)

    assert Profile.load(path) == profile


def test_profiling_restores_thread_count_and_leaves_the_module_unchanged() -> None:
    model, inputs = resolve_model("zoo:resnet_mini")
    traced = trace(model, inputs)
    traced.module.train()
    before = {k: v.clone() for k, v in traced.module.state_dict().items()}
    threads = torch.get_num_threads()

    profile_model(traced, inputs, model_name="zoo:resnet_mini", threads=1, runs=2, progress=False)

    assert torch.get_num_threads() == threads
    assert traced.module.training
    torch.testing.assert_close(traced.module.state_dict(), before)


def test_profile_accepts_a_bare_graph_module_and_records_the_thread_count() -> None:
    module = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()))

    profile = profile_model(
        module, torch.randn(2, 4), model_name="mlp", threads=1, runs=2, progress=False
    )

    assert set(profile.node_ms) == {"input_1", "_0", "_1"}
    assert profile.threads == 1


def test_tier_latency_from_speed_equals_host_latency_divided_by_speed() -> None:
    graph, _ = _lenet()
    host = _host(graph)

    table = tier_latency_ms(graph, _topology({"speed": 0.25}, {"speed": 4}), host=host)

    assert table["tier0"] == pytest.approx({n: ms / 0.25 for n, ms in host.node_ms.items()})
    assert table["tier1"] == pytest.approx({n: ms / 4 for n, ms in host.node_ms.items()})


def test_tier_latency_prefers_the_tiers_own_profile(tmp_path: Path) -> None:
    graph, _ = _lenet()
    host = _host(graph)
    tier_file = tmp_path / "tier1.json"
    own = Profile("zoo:lenet", "tier1", 1, 5, dict.fromkeys(host.node_ms, 7.0), 7.0 * len(graph))
    own.save(tier_file)
    topology = _topology({"speed": 1}, {"profile": str(tier_file)}, {"speed": 1})

    table = tier_latency_ms(graph, topology, host=host, tier_profiles={"tier2": own})

    assert table["tier0"] == host.node_ms
    assert set(table["tier1"].values()) == {7.0}
    assert set(table["tier2"].values()) == {7.0}


def test_tier_latency_of_a_block_is_the_sum_of_its_members() -> None:
    model, inputs = resolve_model("zoo:resnet_mini")
    fine = capture(model, inputs, name="zoo:resnet_mini")
    blocks = capture(model, inputs, name="zoo:resnet_mini", granularity="block")
    node_ms = {node.name: 1.0 for node in fine}
    host = Profile("zoo:resnet_mini", "host", 1, 5, node_ms, float(len(fine)))

    table = tier_latency_ms(blocks, _topology({"speed": 2}), host=host)

    assert table["tier0"] == {block.name: len(block.members) / 2 for block in blocks}
    assert any(len(block.members) > 1 for block in blocks)


def test_estimated_profile_is_marked_and_proportional_to_flops() -> None:
    graph, _ = _lenet()

    estimate = estimate_profile(graph, gflops=10.0)

    assert estimate.meta["estimated"] is True
    assert estimate.node_ms == pytest.approx({n.name: n.flops / 1e7 for n in graph})
    assert estimate.node_ms["conv1"] > 0


def test_tier_latency_without_host_profile_uses_the_estimate() -> None:
    graph, _ = _lenet()

    table = tier_latency_ms(graph, _topology({"speed": 0.5}), host=None)

    estimate = estimate_profile(graph)
    assert table["tier0"] == pytest.approx({n: ms * 2 for n, ms in estimate.node_ms.items()})


def test_profile_missing_a_node_raises_profile_error_naming_file_and_node(
    tmp_path: Path,
) -> None:
    graph, _ = _lenet()
    node_ms = {n: ms for n, ms in _host(graph).node_ms.items() if n != "fc2"}
    path = tmp_path / "partial.json"
    Profile("zoo:lenet", "pi", 1, 5, node_ms, 1.0).save(path)
    topology = _topology({"profile": str(path)})

    with pytest.raises(ProfileError, match=rf"{re.escape(str(path))}.*no latency for node 'fc2'"):
        tier_latency_ms(graph, topology, host=None)


def test_host_profile_missing_a_node_raises_profile_error_naming_machine_and_node() -> None:
    graph, _ = _lenet()
    node_ms = {n: ms for n, ms in _host(graph).node_ms.items() if n != "conv2"}
    host = Profile("zoo:lenet", "laptop", 1, 5, node_ms, 1.0)

    with pytest.raises(ProfileError, match=r"'laptop'.*no latency for node 'conv2'"):
        tier_latency_ms(graph, _topology({"speed": 1}), host=host)


def test_profile_measured_for_another_model_raises_profile_error() -> None:
    graph, _ = _lenet()
    other = Profile("zoo:gru", "laptop", 1, 5, _host(graph).node_ms, 1.0)

    with pytest.raises(ProfileError, match="measured for model 'zoo:gru', not 'zoo:lenet'"):
        tier_latency_ms(graph, _topology({"speed": 1}), host=other)


def test_tier_profiles_naming_an_unknown_tier_raise_profile_error() -> None:
    graph, _ = _lenet()

    with pytest.raises(ProfileError, match="tier 'moon'"):
        tier_latency_ms(
            graph, _topology({"speed": 1}), host=None, tier_profiles={"moon": _host(graph)}
        )
