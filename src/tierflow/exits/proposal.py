"""Where an early exit may sit: articulation points of the layer graph, and a proposal rule.

Note [exit attach points]
-------------------------
A tier that answers at an exit must be able to stop right after the attach node and hand
nothing else on, and the head must have seen everything the sample has been through. So
a node ``v`` admits an exit only if it is an *articulation point* of the DAG in its
topological order: every edge ``u -> w`` with ``index(u) <= index(v) < index(w)`` starts at
``v`` itself (graph outputs count as edges to a sink after every node). Then every
input-to-output path passes through ``v``, and the cut right after ``v`` carries exactly
``v``'s value. Inside a residual block the skip tensor crosses the cut; inside an
Inception block the other branches do; neither admits an exit. Placeholders and graph
outputs are never attach points (an exit there saves nothing), and the node must output
one floating-point tensor that a head can read (``[B, C, H, W]``, ``[B, T, D]`` or
``[B, F]``).

The order is the graph's own topological order, the one the partitioner cuts along.
"""

from __future__ import annotations

from collections.abc import Sequence

from tierflow.errors import ExitError
from tierflow.graph.layer_graph import LayerGraph, LayerNode

_FLOAT_DTYPES = {"float32", "float16", "bfloat16", "float64"}
MAX_FLOPS_FRACTION = 0.6
"""Proposed exits sit where at most this share of the backbone's FLOPs has run: past it an
exit saves less than 40% of the work, rarely worth a head and a confidence check."""


def _cut_reasons(graph: LayerGraph) -> dict[str, str]:
    """For every node that is not an attach point, why not (see the note above)."""
    reasons: dict[str, str] = {}
    outputs = set(graph.outputs)
    # last_use[v]: index of v's last consumer (graph outputs: a sink after every node).
    last_use: dict[str, int] = {}
    for node in graph.nodes:
        for producer in node.inputs:
            last_use[producer] = max(last_use.get(producer, -1), graph.index(node.name))
    sink = len(graph.nodes)
    for name in outputs:
        last_use[name] = sink
    crossing: list[tuple[int, str]] = []  # (last use, producer) of values still live
    for position, node in enumerate(graph.nodes):
        crossing = [(end, name) for end, name in crossing if end > position]
        live_others = [name for end, name in crossing if name != node.name]
        if node.op == "placeholder":
            reasons[node.name] = "it is a model input"
        elif node.name in outputs:
            reasons[node.name] = "it is a model output"
        elif live_others:
            shown = ", ".join(sorted(live_others)[:3])
            reasons[node.name] = (
                f"value(s) {shown} from before it are still used after it (it sits inside a "
                "branch or a skip connection), so no tier can stop right after it"
            )
        elif len(node.outputs) != 1 or node.outputs[0].dtype not in _FLOAT_DTYPES:
            reasons[node.name] = "it does not output a single floating-point tensor"
        elif len(node.outputs[0].shape) not in (2, 3, 4):
            reasons[node.name] = (
                f"its output is shaped {list(node.outputs[0].shape)}; a head reads "
                "[B, C, H, W], [B, T, D] or [B, F]"
            )
        end = last_use.get(node.name, -1)
        if end > position:
            crossing.append((end, node.name))
    # A node must also have a consumer: a dead value is not on any input-output path.
    for node in graph.nodes:
        if node.name not in reasons and node.name not in last_use:
            reasons[node.name] = "its value is never used"
    return reasons


def articulation_points(graph: LayerGraph) -> tuple[str, ...]:
    """Nodes that admit an early exit, in topological order (see Note [exit attach points]).

    Examples
    --------
    >>> from tierflow.graph import capture
    >>> from tierflow.models import resolve_model
    >>> model, inputs = resolve_model("zoo:lenet")
    >>> "pool1" in articulation_points(capture(model, inputs))
    True
    """
    reasons = _cut_reasons(graph)
    return tuple(node.name for node in graph.nodes if node.name not in reasons)


def validate_exit_nodes(graph: LayerGraph, nodes: Sequence[str]) -> None:
    """Raise :class:`ExitError` naming the first node that cannot carry an exit, and why."""
    reasons = _cut_reasons(graph)
    seen: set[str] = set()
    for node in nodes:
        if node not in graph:
            raise ExitError(
                f"exit node {node!r} is not a node of {graph.model}; "
                f"attach points: {', '.join(articulation_points(graph)) or 'none'}"
            )
        if node in seen:
            raise ExitError(f"exit node {node!r} is given twice")
        seen.add(node)
        if node in reasons:
            raise ExitError(f"exit node {node!r} cannot carry an exit: {reasons[node]}")


def propose_exits(
    graph: LayerGraph, count: int, *, max_flops_fraction: float = MAX_FLOPS_FRACTION
) -> tuple[str, ...]:
    """Propose up to ``count`` exit attach nodes, spread over the cheap first part of the model.

    The rule: take the articulation points whose cumulative FLOPs (share of the whole
    model's, up to and including the node) lie in ``(0, max_flops_fraction]``; split that
    range into ``count`` equal bands; in each band pick the point with the smallest output
    (what a head reads and what a tier would send on), the latest on ties. Bands without a
    point are skipped, so fewer than ``count`` nodes may come back (none for a model without
    articulation points in its first part, e.g. one whose first block already branches).

    Parameters
    ----------
    graph:
        The backbone's node-granularity layer graph.
    count:
        Largest number of exits to propose (>= 1).
    max_flops_fraction:
        See :data:`MAX_FLOPS_FRACTION`.

    Examples
    --------
    >>> from tierflow.graph import capture
    >>> from tierflow.models import resolve_model
    >>> model, inputs = resolve_model("zoo:lenet_wide")
    >>> propose_exits(capture(model, inputs), 2)
    ('pool1',)
    """
    if count < 1:
        raise ExitError(f"exit count must be >= 1, not {count}")
    if not 0.0 < max_flops_fraction <= 1.0:
        raise ExitError(f"max_flops_fraction must be in (0, 1], not {max_flops_fraction}")
    total = max(graph.total_flops, 1)
    cumulative: dict[str, float] = {}
    running = 0
    for node in graph.nodes:
        running += node.flops
        cumulative[node.name] = running / total
    candidates: list[LayerNode] = [
        graph[name]
        for name in articulation_points(graph)
        if 0.0 < cumulative[name] <= max_flops_fraction
    ]
    chosen: list[str] = []
    width = max_flops_fraction / count
    for band in range(count):
        low, high = band * width, (band + 1) * width
        in_band = [n for n in candidates if low < cumulative[n.name] <= high]
        if in_band:
            # Ties go to the latest node: after conv -> BN -> ReLU (equal bytes) the head
            # should read the activation, which costs the tier no more to compute.
            smallest = min(n.output_bytes for n in in_band)
            chosen.append([n for n in in_band if n.output_bytes == smallest][-1].name)
    return tuple(chosen)
