"""From profiles to the planner's cost table: how long each node takes on each tier.

A tier's latency for a node comes from, in order of preference:

1. a profile measured on the tier itself, passed in ``tier_profiles``;
2. the profile file named by the tier's ``compute.profile`` in the topology;
3. the host profile divided by the tier's ``compute.speed`` (``0.1`` = ten times slower);
   without a host profile, an analytic FLOP-based estimate stands in for the host
   (:func:`~tierflow.profile.estimate.estimate_profile`).

Profiles hold fine-grained node times; a block node's time is the sum of its members.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tierflow.errors import ProfileError
from tierflow.graph.layer_graph import LayerGraph
from tierflow.profile.estimate import NOMINAL_HOST_GFLOPS, estimate_profile
from tierflow.profile.profile import Profile
from tierflow.topology.schema import Tier, Topology


def tier_latency_ms(
    graph: LayerGraph,
    topology: Topology,
    *,
    host: Profile | None,
    tier_profiles: Mapping[str, Profile] | None = None,
) -> dict[str, dict[str, float]]:
    """Latency of every graph node on every tier, in milliseconds.

    Parameters
    ----------
    graph:
        The model graph (node or block granularity).
    topology:
        The tiers; each has ``compute.speed`` (relative to ``host``) or ``compute.profile``.
    host:
        The profile measured on this host that speeds are relative to; ``None`` to use
        an estimate from FLOPs at :data:`~tierflow.profile.estimate.NOMINAL_HOST_GFLOPS`.
    tier_profiles:
        Profiles measured on tiers themselves, by tier name; they take precedence over
        the topology's ``compute`` entry.

    Returns
    -------
    dict
        ``{tier: {node: ms}}`` with tiers in topology order and nodes in graph order.

    Raises
    ------
    ProfileError
        If a profile names an unknown tier, cannot be read, was measured for another
        model, or lacks a node of the graph; the message names the profile and node.

    Examples
    --------
    >>> from tierflow.graph import capture
    >>> from tierflow.models import resolve_model
    >>> from tierflow.topology import topology_from_dict
    >>> graph = capture(*resolve_model("zoo:lenet"), name="zoo:lenet")
    >>> topology = topology_from_dict({
    ...     "tiers": [{"name": "camera", "kind": "device", "compute": {"speed": 0.1}},
    ...               {"name": "cloud", "kind": "cloud", "compute": {"speed": 2.0}}],
    ...     "links": [{"from": "camera", "to": "cloud", "bandwidth_mbps": 10, "rtt_ms": 20}]})
    >>> table = tier_latency_ms(graph, topology, host=None)  # no host profile: an estimate
    >>> round(table["camera"]["conv1"] / table["cloud"]["conv1"])
    20
    """
    given = dict(tier_profiles or {})
    for name in given:
        if name not in topology.tier_names:
            raise ProfileError(
                f"tier_profiles names tier {name!r}, which is not in the topology "
                f"(tiers are {', '.join(topology.tier_names)})"
            )
    loaded: dict[str, Profile] = {}
    base: Profile | None = None
    table: dict[str, dict[str, float]] = {}
    for tier in topology.tiers:
        if tier.name in given:
            profile = given[tier.name]
            profile.check_matches(
                graph, source=f"profile for tier {tier.name!r} (machine {profile.machine!r})"
            )
            table[tier.name] = _node_latency(graph, profile, scale=1.0)
        elif tier.compute.profile is not None:
            profile = _load(tier, loaded, graph)
            table[tier.name] = _node_latency(graph, profile, scale=1.0)
        else:
            if base is None:
                base = _host(graph, host)
            speed = _speed(tier)
            table[tier.name] = _node_latency(graph, base, scale=1.0 / speed)
    return table


def _host(graph: LayerGraph, host: Profile | None) -> Profile:
    if host is None:
        return estimate_profile(graph, gflops=NOMINAL_HOST_GFLOPS)
    host.check_matches(graph, source=f"host profile (machine {host.machine!r})")
    return host


def _speed(tier: Tier) -> float:
    speed = tier.compute.speed
    # The topology schema guarantees exactly one of speed and profile.
    assert speed is not None, f"tier {tier.name!r} has neither speed nor profile"
    return speed


def _load(tier: Tier, cache: dict[str, Profile], graph: LayerGraph) -> Profile:
    path = tier.compute.profile
    assert path is not None
    if path not in cache:
        profile = Profile.load(Path(path))
        profile.check_matches(graph, source=f"profile {path} of tier {tier.name!r}")
        cache[path] = profile
    return cache[path]


def _node_latency(graph: LayerGraph, profile: Profile, *, scale: float) -> dict[str, float]:
    return {
        node.name: scale * sum(profile.node_ms[m] for m in (node.members or (node.name,)))
        for node in graph
    }
