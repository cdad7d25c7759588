"""`split()`: applying a :class:`~tierflow.plan.Plan` to a model."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn

from tierflow.errors import PartitionError
from tierflow.graph.layer_graph import LayerGraph
from tierflow.graph.trace import trace
from tierflow.partition.segment import SplitModel
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
    return split_traced(traced, plan.assignment, plan.tiers)


def expand_assignment(graph: LayerGraph, tiers: dict[str, str]) -> dict[str, str]:
    """Map a per-graph-node assignment to fine-grained nodes (block members)."""
    return {member: tiers[node.name] for node in graph.nodes for member in node.members}
