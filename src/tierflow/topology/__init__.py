"""Tier topologies: which tiers exist, how fast they are, and the links between them."""

from tierflow.topology.load import apply_overrides, load_topology, topology_from_dict
from tierflow.topology.schema import Compute, Link, Power, Tier, TierKind, Topology

__all__ = [
    "Compute",
    "Link",
    "Power",
    "Tier",
    "TierKind",
    "Topology",
    "apply_overrides",
    "load_topology",
    "topology_from_dict",
]
