"""Topologies load from YAML, validate with errors naming the field, and take overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierflow.errors import TopologyError
from tierflow.topology import apply_overrides, load_topology, topology_from_dict

EXAMPLES = sorted((Path(__file__).parent.parent / "examples" / "topologies").glob("*.yaml"))


def _three_tiers() -> dict:
    return {
        "tiers": [
            {"name": "camera", "kind": "device", "compute": {"speed": 0.1}, "memory_mb": 256},
            {"name": "gateway", "kind": "edge", "compute": {"speed": 0.5}},
            {"name": "datacenter", "kind": "cloud", "compute": {"speed": 4.0}},
        ],
        "links": [
            {"from": "camera", "to": "gateway", "bandwidth_mbps": 20, "rtt_ms": 5},
            {"from": "gateway", "to": "datacenter", "bandwidth_mbps": 10, "rtt_ms": 40},
        ],
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_topology_loads(path: Path):
    topology = load_topology(path)
    assert len(topology.tiers) >= 2
    assert [link.src for link in topology.links] == list(topology.tier_names[:-1])


def test_at_least_three_examples_ship_and_one_has_four_tiers():
    assert len(EXAMPLES) >= 3
    assert any(len(load_topology(p).tiers) == 4 for p in EXAMPLES)


def test_link_order_must_follow_tier_order():
    raw = _three_tiers()
    raw["links"].reverse()
    with pytest.raises(TopologyError, match=r"links\.0: expected camera -> gateway"):
        topology_from_dict(raw)


def test_unknown_tier_in_a_link_is_named():
    raw = _three_tiers()
    raw["links"][1]["to"] = "cloudy"
    with pytest.raises(TopologyError, match=r"links\.1\.to: unknown tier 'cloudy'"):
        topology_from_dict(raw)


def test_bad_field_values_name_the_field():
    raw = _three_tiers()
    raw["tiers"][0]["kind"] = "phone"
    raw["links"][0]["bandwidth_mbps"] = -3
    with pytest.raises(TopologyError) as excinfo:
        topology_from_dict(raw)
    message = str(excinfo.value)
    assert "tiers.0.kind" in message
    assert "links.0.bandwidth_mbps" in message


def test_compute_needs_exactly_one_of_speed_or_profile():
    raw = _three_tiers()
    raw["tiers"][1]["compute"] = {}
    with pytest.raises(TopologyError, match=r"tiers\.1\.compute: give exactly one"):
        topology_from_dict(raw)


def test_unknown_fields_are_refused_so_typos_do_not_pass_silently():
    raw = _three_tiers()
    raw["tiers"][0]["memroy_mb"] = 5
    with pytest.raises(TopologyError, match=r"tiers\.0\.memroy_mb"):
        topology_from_dict(raw)


def test_overrides_set_values_by_index_and_by_tier_name():
    raw = apply_overrides(
        _three_tiers(), ["links.1.bandwidth_mbps=2.5", "tiers.gateway.memory_mb=512"]
    )
    topology = topology_from_dict(raw)
    assert topology.links[1].bandwidth_mbps == 2.5
    assert topology.tier("gateway").memory_mb == 512


def test_override_with_a_bad_path_is_refused():
    with pytest.raises(TopologyError, match=r"links\.7"):
        apply_overrides(_three_tiers(), ["links.7.rtt_ms=3"])
    with pytest.raises(TopologyError, match="PATH=VALUE"):
        apply_overrides(_three_tiers(), ["links.0.rtt_ms"])


def test_missing_file_is_named(tmp_path: Path):
    with pytest.raises(TopologyError, match=r"nope\.yaml"):
        load_topology(tmp_path / "nope.yaml")


def test_relative_profile_paths_resolve_against_the_topology_file(tmp_path: Path):
    (tmp_path / "topo.yaml").write_text(
        "tiers:\n"
        "  - {name: a, kind: device, compute: {profile: a.json}}\n"
        "  - {name: b, kind: cloud, compute: {speed: 2}}\n"
        "links:\n  - {from: a, to: b, bandwidth_mbps: 5, rtt_ms: 1}\n"
    )
    topology = load_topology(tmp_path / "topo.yaml")
    assert topology.tiers[0].compute.profile == str(tmp_path / "a.json")
