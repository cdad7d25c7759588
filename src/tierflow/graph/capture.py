"""Capture a model as a :class:`LayerGraph`: trace, run once on example inputs, describe.

Note [What becomes a LayerNode]
-------------------------------
Every ``placeholder``, ``call_module``, ``call_function`` and ``call_method`` node of the
traced GraphModule becomes a LayerNode with the same name, in graph order; a splitter that
re-traces the model finds each LayerNode by name. ``get_attr`` nodes (parameters and
buffers in export graphs, constants such as a learned position embedding in fx graphs) are
not LayerNodes: their bytes count into the ``param_bytes`` of every node that consumes
them, and they are left out of ``inputs``. The fx ``output`` node is not a LayerNode;
``LayerGraph.outputs`` names the nodes whose values it returns (constants in the output,
which torch.export produces for ``x.size(0)``, are not nodes and are left out).

Values that are not tensors (``x.size()`` results, Python numbers) are described as
``TensorSpec(shape=(), dtype="int64" | "float64" | "bool" | "python", size_bytes=8)``;
tuples and lists are flattened, ``None`` is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import torch
from torch import fx, nn
from torch.fx.node import _get_qualified_name

from tierflow.errors import CaptureError
from tierflow.graph.coarsen import coarsen
from tierflow.graph.flops import node_flops
from tierflow.graph.layer_graph import Granularity, LayerGraph, LayerNode, TensorSpec
from tierflow.graph.layer_graph import Tracer as TracerName
from tierflow.graph.trace import Traced, trace

_SCALAR_DTYPES = {bool: "bool", int: "int64", float: "float64"}
_PYTHON_VALUE_BYTES = 8  # a scalar crossing a link is sent as one 64-bit word


def capture(
    model: nn.Module,
    example_inputs: Sequence[Any],
    *,
    name: str = "model",
    granularity: Granularity = "node",
    tracer: TracerName | None = None,
    leaf_modules: Iterable[type[nn.Module]] = (),
) -> LayerGraph:
    """Trace ``model`` and describe every operation's FLOPs, parameters and outputs.

    Parameters
    ----------
    model:
        The model to capture; it is not modified (see :func:`trace`).
    example_inputs:
        Positional inputs for one forward pass; shapes and sizes are measured on them.
    name:
        Recorded as ``LayerGraph.model`` (use the model spec string where there is one).
    granularity:
        ``"node"``: one LayerNode per traced op. ``"block"``: ops grouped by their
        outermost non-container module (see :func:`tierflow.graph.coarsen.coarsen`).
    tracer, leaf_modules:
        Passed to :func:`trace`.

    Returns
    -------
    LayerGraph

    Raises
    ------
    CaptureError
        If the model cannot be traced or the traced graph fails on the example inputs.

    Examples
    --------
    >>> from tierflow.models import resolve_model
    >>> model, inputs = resolve_model("zoo:resnet_mini")
    >>> graph = capture(model, inputs, name="zoo:resnet_mini", granularity="block")
    >>> graph["stages_0"].module_type
    'ResidualBlock'
    """
    traced = trace(model, example_inputs, tracer=tracer, leaf_modules=leaf_modules)
    graph = describe(traced, example_inputs, name=name)
    return coarsen(graph, traced) if granularity == "block" else graph


def describe(traced: Traced, example_inputs: Sequence[Any], *, name: str = "model") -> LayerGraph:
    """Build the node-granularity LayerGraph of an already traced model.

    Runs ``traced.module`` once on ``example_inputs`` (under ``torch.no_grad``).
    """
    recorder = _Recorder(traced.module)
    with torch.no_grad():
        try:
            recorder.run(*example_inputs)
        except Exception as exc:
            node = recorder.current
            where = f"node {node.name!r} ({_target_name(node)})" if node else "the graph"
            # fx appends the generated code and a tlparse hint below the first line; the
            # first line is the error itself.
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            shapes = ", ".join(
                "×".join(str(d) for d in x.shape) for x in example_inputs if hasattr(x, "shape")
            )
            raise CaptureError(
                f"running the traced {name} on the example inputs ({shapes}) failed at "
                f"{where}: {type(exc).__name__}: {reason}; check the input shapes and dtypes"
            ) from exc
    nodes = [
        recorder.layer_nodes[n.name]
        for n in traced.module.graph.nodes
        if n.name in recorder.layer_nodes
    ]
    output = next(n for n in traced.module.graph.nodes if n.op == "output")
    producers = [n.name for n in output.all_input_nodes if n.op != "get_attr"]
    return LayerGraph(
        model=name,
        nodes=tuple(nodes),
        outputs=tuple(producers),
        granularity="node",
        tracer=traced.tracer,
    )


class _Recorder(fx.Interpreter):
    """An Interpreter that describes each node as it runs it."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.current: fx.Node | None = None
        self.attr_bytes: dict[str, int] = {}
        self.layer_nodes: dict[str, LayerNode] = {}

    def run_node(self, n: fx.Node) -> Any:
        self.current = n
        result = super().run_node(n)
        if n.op == "get_attr":
            self.attr_bytes[n.name] = sum(s.size_bytes for s in _specs(result))
        elif n.op != "output":
            # Inputs are still in the environment: values are freed only after run_node.
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            module = self.fetch_attr(str(n.target)) if n.op == "call_module" else None
            self.layer_nodes[n.name] = self._layer_node(n, args, kwargs, result, module)
        return result

    def _layer_node(
        self, n: fx.Node, args: Any, kwargs: dict[str, Any], result: Any, module: nn.Module | None
    ) -> LayerNode:
        attr_inputs = [p.name for p in n.all_input_nodes if p.op == "get_attr"]
        param_bytes = sum(self.attr_bytes[p] for p in attr_inputs)
        if module is not None:
            tensors = {id(t): t for t in (*module.parameters(), *module.buffers())}
            param_bytes += sum(t.numel() * t.element_size() for t in tensors.values())
        op: Literal["placeholder", "call_module", "call_function", "call_method"] = n.op  # type: ignore[assignment]
        return LayerNode(
            name=n.name,
            op=op,
            target=_target_name(n),
            module_type=type(module).__name__ if module is not None else None,
            flops=node_flops(n, args, kwargs, result, module),
            param_bytes=param_bytes,
            outputs=tuple(_specs(result)),
            inputs=tuple(p.name for p in n.all_input_nodes if p.op != "get_attr"),
            members=(n.name,),
        )


def _specs(value: Any) -> Iterator[TensorSpec]:
    if isinstance(value, torch.Tensor):
        yield TensorSpec(
            tuple(value.shape),
            str(value.dtype).removeprefix("torch."),
            value.numel() * value.element_size(),
        )
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _specs(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _specs(item)
    elif value is not None:
        yield TensorSpec((), _SCALAR_DTYPES.get(type(value), "python"), _PYTHON_VALUE_BYTES)


def _target_name(node: fx.Node) -> str:
    """``layer1.0.conv1``, ``torch.flatten``, ``operator.add``, ``aten.conv2d.default``."""
    target = node.target
    if isinstance(target, str):
        return target
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    try:
        qualified = _get_qualified_name(target)
    except Exception:
        return getattr(target, "__name__", repr(target))
    # Builtins report their implementation module; show the name users write.
    for private, public in (("_operator.", "operator."), ("torch._C._nn.", "torch.nn.functional.")):
        if qualified.startswith(private):
            return public + qualified.removeprefix(private)
    return qualified
