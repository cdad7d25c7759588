"""`LayerGraph`: the typed, serialisable view of a model that every later stage consumes.

A graph is a DAG of :class:`LayerNode` in topological order. Each node produces one value
(a tensor, or a tuple of tensors for ops such as ``nn.LSTM``); the value is referred to by
the node's name everywhere else in tierflow (plan cuts, segment inputs and outputs, wire
tensor names).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Literal

from tierflow.errors import CaptureError

GRAPH_FORMAT_VERSION = 1

OpKind = Literal["placeholder", "call_module", "call_function", "call_method", "block"]
Granularity = Literal["node", "block"]
Tracer = Literal["fx", "export"]


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of one tensor a node outputs."""

    shape: tuple[int, ...]
    dtype: str
    size_bytes: int


@dataclass(frozen=True)
class LayerNode:
    """One operation (or, for ``granularity="block"``, one contracted block of operations).

    Attributes
    ----------
    name:
        Unique name; also the name of the value this node outputs.
    op:
        ``placeholder`` for a model input, ``call_module`` / ``call_function`` /
        ``call_method`` as in torch.fx, or ``block`` for a coarsened group.
    target:
        What runs: a module path (``layer1.0.conv1``), a function (``torch.flatten``) or a
        method name (``view``).
    module_type:
        Class name of the module for ``call_module`` nodes (``Conv2d``), else ``None``.
    flops:
        Analytic floating-point operations for one forward pass (a multiply-add counts 2).
    param_bytes:
        Bytes of the parameters and buffers this node reads.
    outputs:
        The tensors the node outputs, flattened.
    inputs:
        Names of the producer nodes, in first-use order, without duplicates.
    members:
        The fine-grained node names this node stands for (itself for ``granularity="node"``).
    """

    name: str
    op: OpKind
    target: str
    module_type: str | None
    flops: int
    param_bytes: int
    outputs: tuple[TensorSpec, ...]
    inputs: tuple[str, ...]
    members: tuple[str, ...]

    @property
    def output_bytes(self) -> int:
        """Bytes of everything this node outputs (what crosses a link if it is cut)."""
        return sum(t.size_bytes for t in self.outputs)


@dataclass(frozen=True)
class LayerGraph:
    """A model as a DAG of layers in topological order.

    Attributes
    ----------
    model:
        Human name of the model (its spec string where known).
    nodes:
        All nodes in topological order; placeholders (model inputs) come first.
    outputs:
        Names of the nodes whose values make up the model output, in output order.
    granularity:
        ``"node"`` (one node per traced operation) or ``"block"`` (coarsened).
    tracer:
        Which tracer produced the graph (``"fx"`` or ``"export"``); splitting re-traces
        the model the same way so that node names match.
    """

    model: str
    nodes: tuple[LayerNode, ...]
    outputs: tuple[str, ...]
    granularity: Granularity = "node"
    tracer: Tracer = "fx"
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, int] = {}
        for position, node in enumerate(self.nodes):
            if node.name in index:
                raise CaptureError(f"duplicate node name {node.name!r} in graph of {self.model}")
            for producer in node.inputs:
                if producer not in index:
                    raise CaptureError(
                        f"node {node.name!r} consumes {producer!r}, which is not an earlier node "
                        "(graph is not in topological order)"
                    )
            index[node.name] = position
        for name in self.outputs:
            if name not in index:
                raise CaptureError(f"graph output {name!r} is not a node of {self.model}")
        object.__setattr__(self, "_index", index)

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[LayerNode]:
        return iter(self.nodes)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __getitem__(self, name: str) -> LayerNode:
        try:
            return self.nodes[self._index[name]]
        except KeyError:
            raise KeyError(f"no node named {name!r} in graph of {self.model}") from None

    def index(self, name: str) -> int:
        """Position of node ``name`` in topological order."""
        return self._index[name]

    @property
    def inputs(self) -> tuple[str, ...]:
        """Names of the model inputs (placeholder nodes)."""
        return tuple(n.name for n in self.nodes if n.op == "placeholder")

    @cached_property
    def consumers(self) -> Mapping[str, tuple[str, ...]]:
        """For each node, the nodes that consume its value, in topological order."""
        result: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for node in self.nodes:
            for producer in node.inputs:
                result[producer].append(node.name)
        return {name: tuple(users) for name, users in result.items()}

    @property
    def total_flops(self) -> int:
        return sum(n.flops for n in self.nodes)

    @property
    def total_param_bytes(self) -> int:
        return sum(n.param_bytes for n in self.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tierflow_graph_version": GRAPH_FORMAT_VERSION,
            "model": self.model,
            "granularity": self.granularity,
            "tracer": self.tracer,
            "outputs": list(self.outputs),
            "nodes": [asdict(n) for n in self.nodes],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerGraph:
        version = data.get("tierflow_graph_version")
        if version != GRAPH_FORMAT_VERSION:
            raise CaptureError(
                f"tierflow_graph_version is {version!r}; this tierflow reads {GRAPH_FORMAT_VERSION}"
            )
        nodes = tuple(
            LayerNode(
                name=n["name"],
                op=n["op"],
                target=n["target"],
                module_type=n["module_type"],
                flops=int(n["flops"]),
                param_bytes=int(n["param_bytes"]),
                outputs=tuple(
                    TensorSpec(tuple(t["shape"]), t["dtype"], int(t["size_bytes"]))
                    for t in n["outputs"]
                ),
                inputs=tuple(n["inputs"]),
                members=tuple(n["members"]),
            )
            for n in data["nodes"]
        )
        return cls(
            model=data["model"],
            nodes=nodes,
            outputs=tuple(data["outputs"]),
            granularity=data["granularity"],
            tracer=data["tracer"],
        )
