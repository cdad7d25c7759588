"""Splitting a traced model into per-tier segments by a node-to-tier assignment.

Each non-empty tier gets one :class:`~tierflow.partition.segment.Segment`, built with
torch.fx from a copy of the traced graph: its placeholders are the values it receives
(model inputs assigned to it, and values produced on lower tiers), its nodes are copies
of the nodes assigned to it, and its outputs are the values a higher tier or the model
output needs. Parameters and buffers (``get_attr`` nodes) are copied into every segment
that reads them, since they are state, not data sent over a link.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch.utils._pytree as pytree
from torch import fx

from tierflow.errors import PartitionError
from tierflow.graph.trace import Traced
from tierflow.partition.assignment import check_monotone
from tierflow.partition.segment import Segment, SplitModel, ValueRef

# The fx ops that are LayerGraph nodes; get_attr and output are not.
_LAYER_OPS = frozenset({"placeholder", "call_module", "call_function", "call_method"})


def split_traced(traced: Traced, assignment: Mapping[str, str], tiers: Sequence[str]) -> SplitModel:
    """Split a traced model into one segment per non-empty tier.

    Neither the traced module nor the model it came from is modified; every segment owns
    copies of the parameters and buffers it uses.

    Parameters
    ----------
    traced:
        The traced model; its fx node names are the ``LayerGraph`` node names.
    assignment:
        The tier of every ``LayerGraph`` node (fine-grained fx node names, placeholders
        included).
    tiers:
        All tier names in order, lowest first; tiers with no nodes get no segment.

    Returns
    -------
    SplitModel
        Segments in tier order; calling it (or :func:`run_split`) returns what the
        traced module returns.

    Raises
    ------
    PartitionError
        If a node is unassigned, a tier unknown, a node sits on a lower tier than one of
        its producers, or the model returns a parameter directly.

    Examples
    --------
    >>> from tierflow.graph import describe, trace
    >>> from tierflow.models import resolve_model
    >>> model, inputs = resolve_model("zoo:lenet")
    >>> traced = trace(model, inputs)
    >>> graph = describe(traced, inputs)
    >>> assignment = {n.name: "device" if n.name in ("x", "conv1") else "cloud" for n in graph}
    >>> split = split_traced(traced, assignment, ["device", "edge", "cloud"])
    >>> [(segment.tier, segment.output_names) for segment in split]
    [('device', ('conv1',)), ('cloud', ('fc3',))]
    """
    module = traced.module
    nodes = list(module.graph.nodes)
    layer_nodes = [n for n in nodes if n.op in _LAYER_OPS]
    check_monotone(
        {n.name: [p.name for p in n.all_input_nodes if p.op in _LAYER_OPS] for n in layer_nodes},
        assignment,
        tiers,
    )
    rank = {tier: position for position, tier in enumerate(tiers)}
    tier_of = {n: rank[assignment[n.name]] for n in layer_nodes}
    output_node = next(n for n in reversed(nodes) if n.op == "output")
    returned = set(output_node.all_input_nodes)

    segments = []
    for position, tier in enumerate(tiers):
        members = [n for n in layer_nodes if tier_of[n] == position]
        if not members:
            continue
        outputs = [
            n
            for n in members
            if n in returned or any(u in tier_of and tier_of[u] > position for u in n.users)
        ]
        segments.append(_segment(module, members, outputs, tier))

    codegen = module.graph._codegen
    pytree_info = getattr(codegen, "pytree_info", None)
    template = _template(output_node.args[0])
    if pytree_info is not None and pytree_info.out_spec is not None:
        # torch.export modules return pytree.tree_unflatten(flat outputs, out_spec).
        template = pytree.tree_unflatten(list(template), pytree_info.out_spec)
    return SplitModel(
        segments,
        input_names=[n.name for n in layer_nodes if n.op == "placeholder"],
        output_template=template,
        input_spec=None if pytree_info is None else pytree_info.in_spec,
    )


def _segment(
    module: fx.GraphModule, members: list[fx.Node], outputs: list[fx.Node], tier: str
) -> Segment:
    position = {node: index for index, node in enumerate(module.graph.nodes)}
    member_set = set(members)
    received = {n for n in members if n.op == "placeholder"}
    for node in members:
        received.update(
            p for p in node.all_input_nodes if p.op in _LAYER_OPS and p not in member_set
        )
    inputs = sorted(received, key=position.__getitem__)

    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in inputs:
        env[node] = graph.placeholder(node.name)
        env[node].meta = copy.copy(node.meta)
    for node in members:
        if node.op == "placeholder":
            continue
        for attr in node.all_input_nodes:
            if attr.op == "get_attr" and attr not in env:
                env[attr] = graph.node_copy(attr)
        env[node] = graph.node_copy(node, env.__getitem__)
    graph.output(tuple(env[n] for n in outputs))
    graph.lint()

    # GraphModule(module, graph) references the submodules and attributes the graph uses;
    # deep-copying it gives the segment its own parameters, shared with nothing else.
    segment_module = copy.deepcopy(fx.GraphModule(module, graph, class_name=f"Segment_{tier}"))
    # Only the root's flag: submodules keep theirs (a frozen BatchNorm stays in eval).
    segment_module.training = module.training
    return Segment(
        segment_module,
        tier=tier,
        input_names=[n.name for n in inputs],
        output_names=[n.name for n in outputs],
    )


def _template(argument: Any) -> Any:
    """The model output with nodes replaced by :class:`ValueRef` and fx's immutable
    containers by plain ones, as the generated ``forward`` returns them."""
    if isinstance(argument, fx.Node):
        if argument.op not in _LAYER_OPS:
            raise PartitionError(
                f"the model returns {argument.op} node {argument.name!r} directly; only "
                "computed values and inputs can be model outputs of a split model"
            )
        return ValueRef(argument.name)
    if isinstance(argument, tuple):
        items = tuple(_template(a) for a in argument)
        return type(argument)(*items) if hasattr(argument, "_fields") else items
    if isinstance(argument, list):
        return [_template(a) for a in argument]
    if isinstance(argument, dict):
        return {key: _template(value) for key, value in argument.items()}
    return argument
