"""Checking that an assignment of nodes to tiers can run: data flows only upward."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from tierflow.errors import PartitionError
from tierflow.graph.layer_graph import LayerGraph


def check_monotone(
    graph: LayerGraph | Mapping[str, Iterable[str]],
    assignment: Mapping[str, str],
    tiers: Sequence[str],
) -> None:
    """Raise unless ``assignment`` puts every node on a known tier, never below a producer.

    Tiers are ordered from data source to cloud and links carry data only upward, so a
    node may run on the tier of its producers or a higher one, never a lower one.

    Parameters
    ----------
    graph:
        A :class:`LayerGraph`, or a mapping from each node name to the names of the
        nodes it consumes (producers must themselves be keys).
    assignment:
        Tier name for every node; names that are not nodes of ``graph`` are rejected.
    tiers:
        Tier names in order, lowest (data source) first.

    Raises
    ------
    PartitionError
        Naming the node and tiers at fault: an unassigned or unknown node, an unknown
        tier, or a node on a lower tier than one of its producers.

    Examples
    --------
    >>> check_monotone({"x": [], "conv": ["x"]}, {"x": "device", "conv": "cloud"},
    ...                ["device", "cloud"])
    >>> check_monotone({"x": [], "conv": ["x"]}, {"x": "cloud", "conv": "device"},
    ...                ["device", "cloud"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    tierflow.errors.PartitionError: node 'conv' is assigned to tier 'device' but consumes 'x' ...
    """
    producers = (
        {node.name: node.inputs for node in graph}
        if isinstance(graph, LayerGraph)
        else {name: tuple(inputs) for name, inputs in graph.items()}
    )
    order = " -> ".join(tiers)
    rank: dict[str, int] = {}
    for position, tier in enumerate(tiers):
        if tier in rank:
            raise PartitionError(f"tier {tier!r} is listed twice in the tier order ({order})")
        rank[tier] = position

    for name in assignment:
        if name not in producers:
            raise PartitionError(
                f"assignment names node {name!r}, which is not a node of the model "
                "(was the plan made for another model or granularity?)"
            )
    for name in producers:
        if name not in assignment:
            raise PartitionError(f"node {name!r} is not assigned to any tier")
        if assignment[name] not in rank:
            raise PartitionError(
                f"node {name!r} is assigned to unknown tier {assignment[name]!r} "
                f"(tiers are {order})"
            )
    for name, inputs in producers.items():
        for producer in inputs:
            if producer not in producers:
                raise PartitionError(f"node {name!r} consumes {producer!r}, which is not a node")
            if rank[assignment[producer]] > rank[assignment[name]]:
                raise PartitionError(
                    f"node {name!r} is assigned to tier {assignment[name]!r} but consumes "
                    f"{producer!r} on tier {assignment[producer]!r}; data flows only upward "
                    f"({order})"
                )
