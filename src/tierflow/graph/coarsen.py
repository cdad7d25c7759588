"""Coarsen a node-granularity LayerGraph into blocks, one per top-level module call.

Note [Blocks]
-------------
Each node is grouped by the outermost module call enclosing it, below the root, whose
module is not a container (``nn.Sequential``, ``nn.ModuleList``, ``nn.ModuleDict``). So
resnet18 gives ``layer1.0`` (a BasicBlock), mobilenet_v2 ``features.1``, googlenet
``inception3a``, and vgg16's layers inside ``features`` stay single. Two calls of one module
are two groups (fx and export number the calls). Placeholders and nodes called from the
root's own forward stay singletons, and so does a group of one node: it keeps its fine name,
op and target.

A block is a LayerNode with ``op="block"``, ``target`` = the module path, ``module_type`` =
its class, ``name`` = the path with non-identifier characters replaced by ``_`` (made
unique), summed ``flops`` and ``param_bytes``, ``members`` = fine names in topological
order, ``inputs`` = the blocks or nodes producing its external inputs, and ``outputs`` =
the values of every member that is used outside the block or is a graph output. With
several such values ``output_bytes`` counts them all: that is what crosses a link when
the block's consumers sit on another tier (an approximation when different consumers
use different values).

If contracting groups would create a cycle (a value leaves a block and comes back into
it through another), the groups on the cycle are dissolved into their fine nodes.
"""

from __future__ import annotations

import dataclasses
import heapq
import re
from collections.abc import Iterable, Mapping

from tierflow.errors import CaptureError
from tierflow.graph.layer_graph import LayerGraph, LayerNode
from tierflow.graph.trace import SCOPE_META, ScopeFrame, Traced


def coarsen(graph: LayerGraph, traced: Traced) -> LayerGraph:
    """Group the nodes of ``graph`` into module blocks (see Note [Blocks]).

    Parameters
    ----------
    graph:
        A ``granularity="node"`` graph described from ``traced``.
    traced:
        The traced model whose node metadata records the enclosing module calls.

    Returns
    -------
    LayerGraph
        A ``granularity="block"`` graph with the same total FLOPs and parameter bytes.

    Examples
    --------
    >>> from tierflow.graph import describe, trace
    >>> from tierflow.models import resolve_model
    >>> model, inputs = resolve_model("zoo:inception_mini")
    >>> traced = trace(model, inputs)
    >>> blocks = coarsen(describe(traced, inputs), traced)
    >>> [n.name for n in blocks if n.op == "block"]
    ['stem', 'block1', 'block2']
    """
    if graph.granularity != "node":
        raise CaptureError(f"graph of {graph.model} is already {graph.granularity}-grained")
    fx_nodes = {n.name: n for n in traced.module.graph.nodes}
    group_of: dict[str, ScopeFrame] = {}
    for node in graph:
        if node.name not in fx_nodes:
            raise CaptureError(f"node {node.name!r} of {graph.model} is not in the traced model")
        frame = _grouping_frame(fx_nodes[node.name].meta.get(SCOPE_META, ()))
        if frame is not None and node.op != "placeholder":
            group_of[node.name] = frame
    while True:
        owner = _owners(graph, group_of)
        cyclic = _cyclic_groups(graph, owner)
        if not cyclic:
            break
        group_of = {n: f for n, f in group_of.items() if f.key not in cyclic}
    return _contract(graph, owner, group_of)


def _grouping_frame(stack: tuple[ScopeFrame, ...]) -> ScopeFrame | None:
    return next((frame for frame in stack if not frame.is_container), None)


def _owners(graph: LayerGraph, group_of: Mapping[str, ScopeFrame]) -> dict[str, str]:
    """Map each fine node to the name of the coarse node it becomes (its group key, or its
    own name when it stays single). Keys are prefixed so they never clash with names."""
    sizes: dict[str, int] = {}
    for frame in group_of.values():
        sizes[frame.key] = sizes.get(frame.key, 0) + 1
    return {
        n.name: "\0" + group_of[n.name].key
        if n.name in group_of and sizes[group_of[n.name].key] > 1
        else n.name
        for n in graph
    }


def _cyclic_groups(graph: LayerGraph, owner: Mapping[str, str]) -> set[str]:
    """Group keys whose contraction leaves a cycle (Kahn's algorithm on the quotient)."""
    edges: dict[str, set[str]] = {o: set() for o in owner.values()}
    indegree = dict.fromkeys(edges, 0)
    for node in graph:
        for producer in node.inputs:
            src, dst = owner[producer], owner[node.name]
            if src != dst and dst not in edges[src]:
                edges[src].add(dst)
                indegree[dst] += 1
    ready = [o for o, d in indegree.items() if d == 0]
    while ready:
        for dst in edges[ready.pop()]:
            indegree[dst] -= 1
            if indegree[dst] == 0:
                ready.append(dst)
    return {o[1:] for o, d in indegree.items() if d > 0 and o.startswith("\0")}


def _contract(
    graph: LayerGraph, owner: Mapping[str, str], group_of: Mapping[str, ScopeFrame]
) -> LayerGraph:
    members: dict[str, list[LayerNode]] = {}
    for node in graph:
        members.setdefault(owner[node.name], []).append(node)
    names = _block_names(graph, members, group_of)
    graph_outputs = set(graph.outputs)
    coarse: dict[str, LayerNode] = {}
    for key, group in members.items():
        if not key.startswith("\0"):  # a node that stays single
            node = group[0]
            inputs = _dedup(names[owner[p]] for p in node.inputs)
            coarse[key] = dataclasses.replace(node, inputs=inputs)
            continue
        inside = {n.name for n in group}
        frame = group_of[group[0].name]
        escaping = [
            n
            for n in group
            if n.name in graph_outputs or any(c not in inside for c in graph.consumers[n.name])
        ]
        coarse[key] = LayerNode(
            name=names[key],
            op="block",
            target=frame.path,
            module_type=frame.module_type.__name__,
            flops=sum(n.flops for n in group),
            param_bytes=sum(n.param_bytes for n in group),
            outputs=tuple(spec for n in escaping for spec in n.outputs),
            inputs=_dedup(names[owner[p]] for n in group for p in n.inputs if p not in inside),
            members=tuple(n.name for n in group),
        )
    order = _topological(graph, owner, coarse)
    return LayerGraph(
        model=graph.model,
        nodes=tuple(coarse[k] for k in order),
        outputs=_dedup(names[owner[o]] for o in graph.outputs),
        granularity="block",
        tracer=graph.tracer,
    )


def _block_names(
    graph: LayerGraph, members: Mapping[str, list[LayerNode]], group_of: Mapping[str, ScopeFrame]
) -> dict[str, str]:
    names = {key: key for key in members if not key.startswith("\0")}
    taken = set(names.values())
    for key, group in members.items():
        if key in names:
            continue
        frame = group_of[group[0].name]
        base = re.sub(r"\W", "_", frame.path) or "block"
        name, suffix = base, 0
        while name in taken:
            suffix += 1
            name = f"{base}_{suffix}"
        names[key] = name
        taken.add(name)
    return names


def _topological(
    graph: LayerGraph, owner: Mapping[str, str], coarse: Mapping[str, LayerNode]
) -> list[str]:
    """Kahn's algorithm, breaking ties by the first member's position, so the coarse order
    follows the fine order wherever it can."""
    first: dict[str, int] = {}
    for node in graph:
        first.setdefault(owner[node.name], graph.index(node.name))
    by_name = {c.name: key for key, c in coarse.items()}
    successors: dict[str, list[str]] = {key: [] for key in coarse}
    indegree = dict.fromkeys(coarse, 0)
    for key, node in coarse.items():
        for producer in node.inputs:
            successors[by_name[producer]].append(key)
            indegree[key] += 1
    heap = [(first[k], k) for k, d in indegree.items() if d == 0]
    heapq.heapify(heap)
    order: list[str] = []
    while heap:
        _, key = heapq.heappop(heap)
        order.append(key)
        for succ in successors[key]:
            indegree[succ] -= 1
            if indegree[succ] == 0:
                heapq.heappush(heap, (first[succ], succ))
    return order


def _dedup(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
