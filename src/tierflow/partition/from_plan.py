"""`split()`: applying a :class:`~tierflow.plan.Plan` to a model."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

from torch import fx, nn

from tierflow.errors import PartitionError
from tierflow.graph.layer_graph import LayerGraph
from tierflow.graph.trace import Traced, trace
from tierflow.partition.segment import Segment, SplitModel
from tierflow.partition.split import split_traced
from tierflow.plan.plan import Plan

_LAYER_OPS = frozenset({"placeholder", "call_module", "call_function", "call_method"})


def split(
    model: nn.Module,
    plan: Plan,
    example_inputs: Sequence[Any],
    *,
    leaf_modules: Iterable[type[nn.Module]] = (),
) -> SplitModel:
    """Cut ``model`` into per-tier segments as ``plan`` says, in tier order.

    The result iterates over its segments (:class:`~tierflow.partition.Segment`, lowest
    tier first) and remembers the model's output structure, so
    ``run_split(result, *inputs)`` returns exactly what the model returns.

    The model is traced again the way the plan's graph was (same tracer, so the same
    node names); it is never modified. Running the segments one after another
    (:func:`tierflow.run_split`) gives the model's output.

    Raises
    ------
    PartitionError
        If the plan does not match the model: a node of the model has no tier in the
        plan, or the plan names a node the model does not have.

    Examples
    --------
    >>> segments = tierflow.split(model, plan, inputs)  # doctest: +SKIP
    >>> torch.testing.assert_close(tierflow.run_split(segments, *inputs), model(*inputs))
    """
    traced = _trace_for(model, plan, example_inputs, leaf_modules)
    return split_traced(traced, plan.assignment, plan.tiers)


def _trace_for(
    model: nn.Module,
    plan: Plan,
    example_inputs: Sequence[Any],
    leaf_modules: Iterable[type[nn.Module]],
) -> Traced:
    """Trace ``model`` as the plan's graph was traced, checking that the node names match."""
    traced = trace(
        model,
        example_inputs,
        tracer="export" if plan.tracer == "export" else "fx",
        leaf_modules=leaf_modules,
    )
    names = {n.name for n in traced.module.graph.nodes if n.op in _LAYER_OPS}
    missing = sorted(names - set(plan.assignment))
    extra = sorted(set(plan.assignment) - names)
    if missing or extra:
        detail = []
        if missing:
            detail.append(f"model nodes without a tier: {', '.join(missing[:5])}")
        if extra:
            detail.append(f"plan nodes not in the model: {', '.join(extra[:5])}")
        raise PartitionError(
            f"plan for {plan.model!r} does not match this model ({'; '.join(detail)}); "
            "plan again for this model and input shape"
        )
    return traced


def split_at_exits(
    model: nn.Module,
    plan: Plan,
    example_inputs: Sequence[Any],
    *,
    leaf_modules: Iterable[type[nn.Module]] = (),
) -> SplitModel:
    """Like :func:`split`, but a tier holding an exit is cut right after the exit's node.

    A tier with ``k`` of the plan's exits gets up to ``k + 1`` segments, in order; all
    carry the tier's name. Part ``i`` of a tier holds its nodes that descend from exactly
    ``i`` of the tier's exit nodes, so the segment ending at an exit returns that exit's
    value and a tier service can run the exit head between two segments (see
    :mod:`tierflow.artifacts.exit_heads`). Without exits this is :func:`split`.

    Raises
    ------
    PartitionError
        As :func:`split`; also when an exit reads a node the model does not have, or two
        exits of one tier are on parallel branches (neither node descends from the other).
    """
    traced = _trace_for(model, plan, example_inputs, leaf_modules)
    if not plan.exits:
        return split_traced(traced, plan.assignment, plan.tiers)
    nodes = {n.name: n for n in traced.module.graph.nodes if n.op in _LAYER_OPS}
    descendants: dict[str, set[str]] = {}
    for planned in plan.exits:
        if planned.node not in nodes:
            raise PartitionError(
                f"exit {planned.name!r} reads node {planned.node!r}, which the model "
                f"{plan.model!r} does not have"
            )
        descendants[planned.name] = _descendants(nodes[planned.node])
    part: dict[str, int] = {}
    for tier in plan.tiers:
        exits = [e for e in plan.exits if e.tier == tier]
        for earlier, later in itertools.pairwise(exits):
            if later.node not in descendants[earlier.name] | {earlier.node}:
                raise PartitionError(
                    f"exits {earlier.name!r} and {later.name!r} on tier {tier!r} read "
                    f"{earlier.node!r} and {later.node!r}, neither of which follows the other;"
                    " exits of one tier must lie on the backbone, in order"
                )
        for node, owner in plan.assignment.items():
            if owner == tier:
                part[node] = sum(node in descendants[e.name] for e in exits)
    # Each part is split as a tier of its own (named "TIER#PART"), then renamed back.
    parts = [f"{t}#{i}" for t in plan.tiers for i in range(1 + _count(plan, t))]
    assignment = {node: f"{tier}#{part[node]}" for node, tier in plan.assignment.items()}
    pieces = split_traced(traced, assignment, parts)
    segments = [
        Segment(
            s.graph_module,
            tier=s.tier.rpartition("#")[0],
            input_names=s.input_names,
            output_names=s.output_names,
        )
        for s in pieces
    ]
    return SplitModel(
        segments,
        input_names=pieces.input_names,
        output_template=pieces.output_template,
        input_spec=pieces.input_spec,
    )


def _count(plan: Plan, tier: str) -> int:
    return sum(e.tier == tier for e in plan.exits)


def _descendants(node: fx.Node) -> set[str]:
    """Names of the layer nodes that use ``node``'s value, directly or not."""
    seen: set[str] = set()
    stack = list(node.users)
    while stack:
        user = stack.pop()
        if user.op not in _LAYER_OPS or user.name in seen:
            continue
        seen.add(user.name)
        stack.extend(user.users)
    return seen


def expand_assignment(graph: LayerGraph, tiers: dict[str, str]) -> dict[str, str]:
    """Map a per-graph-node assignment to fine-grained nodes (block members)."""
    return {member: tiers[node.name] for node in graph.nodes for member in node.members}
