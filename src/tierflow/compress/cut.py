"""Split a model at one node into a lower part (input -> activation) and an upper part.

Compression at a cut (a codec, or a learned bottleneck) needs the two halves as plain
single-tensor modules: the lower part produces the activation that would cross the link,
the upper part consumes it. This reuses :func:`tierflow.partition.split_traced`, so the
halves are exactly the segments a two-tier plan with this cut would deploy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import fx, nn

from tierflow.errors import CompressionError
from tierflow.graph import trace
from tierflow.partition import Segment, split_traced

__all__ = ["CutParts", "SingleOutput", "cut_candidates", "split_at", "split_stretch"]

_LAYER_OPS = frozenset({"placeholder", "call_module", "call_function", "call_method"})
_TIERS = ("lower", "upper")


class SingleOutput(nn.Module):
    """A segment with one input and one output, called like an ordinary layer."""

    def __init__(self, segment: Segment) -> None:
        super().__init__()
        self.segment = segment

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (out,) = self.segment(x)
        result: torch.Tensor = out
        return result


@dataclass(frozen=True)
class CutParts:
    """A model split at ``cut``: ``upper(lower(x))`` equals ``model(x)``.

    ``activation_shape`` is the cut tensor's shape for the example input (batch first).
    """

    cut: str
    lower: SingleOutput
    upper: SingleOutput
    activation_shape: tuple[int, ...]

    @property
    def fp32_bytes_per_sample(self) -> int:
        """Bytes one sample's activation takes as raw float32 (the ratio baseline)."""
        elements = 1
        for dim in self.activation_shape[1:]:
            elements *= dim
        return 4 * elements


def split_at(model: nn.Module, example: torch.Tensor, cut: str) -> CutParts:
    """Split ``model`` after node ``cut`` (an fx node name, e.g. ``"pool2"``).

    The lower part holds ``cut`` and every node it depends on; the rest is the upper
    part. Neither ``model`` nor its parameters are shared with the parts.

    Raises
    ------
    CompressionError
        If ``cut`` is not a node of the model, or more than that one tensor would cross
        (a skip connection around it, a second model input used above it).

    Examples
    --------
    >>> from tierflow.models import resolve_model
    >>> net, (x,) = resolve_model("zoo:lenet")
    >>> parts = split_at(net, x, "pool2")
    >>> parts.activation_shape, torch.allclose(parts.upper(parts.lower(x)), net(x))
    ((1, 16, 5, 5), True)
    """
    traced = trace(model, (example,), tracer="fx")
    nodes = [n for n in traced.module.graph.nodes if n.op in _LAYER_OPS]
    by_name = {n.name: n for n in nodes}
    if cut not in by_name:
        raise CompressionError(
            f"cut {cut!r} is not a node of {type(model).__name__}; "
            f"nodes: {', '.join(n.name for n in nodes)}"
        )
    lower = _ancestors(by_name[cut])
    assignment = {n.name: "lower" if n.name in lower else "upper" for n in nodes}
    split = split_traced(traced, assignment, _TIERS)
    segments = split.segments
    lower_io = (segments[0].input_names, segments[0].output_names)
    if len(segments) != 2 or len(lower_io[0]) != 1 or lower_io[1] != (cut,):
        raise CompressionError(
            f"cut {cut!r} is not a single-tensor cut: the lower part would send "
            f"{lower_io[1]} from inputs {lower_io[0]}"
        )
    upper_segment = segments[1]
    if upper_segment.input_names != (cut,) or len(upper_segment.output_names) != 1:
        raise CompressionError(
            f"cut {cut!r} is not a single-tensor cut: the upper part needs "
            f"{upper_segment.input_names} and returns {upper_segment.output_names}"
        )
    lower_module, upper_module = SingleOutput(segments[0]), SingleOutput(upper_segment)
    with torch.no_grad():
        activation = lower_module(example)
    return CutParts(cut, lower_module, upper_module, tuple(activation.shape))


def split_stretch(
    model: nn.Module, example: torch.Tensor, start: str | None, end: str
) -> SingleOutput:
    """The part of ``model`` after node ``start`` up to and including node ``end``.

    ``start=None`` begins at the model's input; ``end`` may be the model's output node.
    Both ends must be single-tensor cuts (:func:`cut_candidates`, or the output), so the
    stretch takes one tensor and returns one, like the segment a tier would run between
    those cuts.

    Raises
    ------
    CompressionError
        If a node is unknown, ``end`` does not follow ``start``, or more than one tensor
        would enter or leave the stretch.

    Examples
    --------
    >>> from tierflow.models import resolve_model
    >>> net, (x,) = resolve_model("zoo:lenet")
    >>> head = split_stretch(net, x, None, "pool1")
    >>> tail = split_stretch(net, x, "pool1", "fc3")
    >>> torch.allclose(tail(head(x)), net(x))
    True
    """
    traced = trace(model, (example,), tracer="fx")
    nodes = [n for n in traced.module.graph.nodes if n.op in _LAYER_OPS]
    by_name = {n.name: n for n in nodes}
    for name in (start, end):
        if name is not None and name not in by_name:
            raise CompressionError(
                f"node {name!r} is not a node of {type(model).__name__}; "
                f"nodes: {', '.join(n.name for n in nodes)}"
            )
    below = set() if start is None else _ancestors(by_name[start])
    inside = _ancestors(by_name[end]) - below
    if not inside or end in below:
        raise CompressionError(f"stretch {start!r} -> {end!r}: {end!r} does not follow {start!r}")
    tiers = ("lower", "mid", "upper")
    assignment = {
        n.name: "lower" if n.name in below else "mid" if n.name in inside else "upper"
        for n in nodes
    }
    split = split_traced(traced, assignment, tiers)
    (segment,) = [s for s in split.segments if s.tier == "mid"]
    expected_inputs = 1 if start is None else (start,)
    if (
        len(segment.input_names) != 1
        or (start is not None and segment.input_names != expected_inputs)
        or segment.output_names != (end,)
    ):
        raise CompressionError(
            f"stretch {start!r} -> {end!r} is not single-tensor: it takes "
            f"{segment.input_names} and returns {segment.output_names}"
        )
    return SingleOutput(segment)


def cut_candidates(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Nodes after which exactly one 4-D tensor crosses (where a 1x1 conv bottleneck fits).

    Examples
    --------
    >>> from tierflow.models import resolve_model
    >>> net, (x,) = resolve_model("zoo:lenet")
    >>> cut_candidates(net, x)
    ['conv1', 'relu', 'pool1', 'conv2', 'relu_1', 'pool2']
    """
    traced = trace(model, (example,), tracer="fx")
    nodes = [n for n in traced.module.graph.nodes if n.op in _LAYER_OPS]
    shapes: dict[str, tuple[int, ...]] = {}

    def record(node: fx.Node, value: object) -> None:
        if isinstance(value, torch.Tensor):
            shapes[node.name] = tuple(value.shape)

    _run_recording(traced.module, example, record)
    found = []
    for node in nodes:
        if node.op == "placeholder" or len(shapes.get(node.name, ())) != 4:
            continue
        seen = _ancestors(node)
        above = [n for n in nodes if n.name not in seen]
        crossing = {p.name for n in above for p in n.all_input_nodes} & seen
        if crossing == {node.name}:
            found.append(node.name)
    return found


def _ancestors(node: fx.Node) -> set[str]:
    seen: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if current.name in seen:
            continue
        seen.add(current.name)
        stack.extend(p for p in current.all_input_nodes if p.op in _LAYER_OPS)
    return seen


def _run_recording(
    module: fx.GraphModule, example: torch.Tensor, record: Callable[[fx.Node, object], None]
) -> None:
    class _Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> object:
            value = super().run_node(n)
            record(n, value)
            return value

    with torch.no_grad():
        _Recorder(module).run(example)
