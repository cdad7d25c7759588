"""`ExitModel`: a backbone plus early-exit heads, built by fx graph surgery.

The backbone is kept as an ordinary module (``ExitModel.backbone``): tracing it again
gives the same node names, so the planner and the partitioner split it exactly as they
split the plain model, and each head is exported on its own (it takes the attach node's
tensor and returns logits). For training and evaluation a second GraphModule, the *tapped*
backbone, runs the same graph but also returns the attach nodes' values. It shares every
parameter and buffer with ``backbone`` (it is built from a root that maps each target to
the backbone's own object), so training through it trains the backbone.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import fx, nn

from tierflow.errors import ExitError
from tierflow.exits.proposal import validate_exit_nodes
from tierflow.graph import LayerGraph, describe, trace
from tierflow.plan.exit_options import FINAL_EXIT


def _lookup(module: nn.Module, target: str) -> Any:
    value: Any = module
    for part in target.split("."):
        value = getattr(value, part, None)
        if value is None:
            return None
    return value


class ExitModel(nn.Module):
    """A backbone with early-exit heads attached at some of its graph nodes.

    ``forward(x)`` returns ``(final_logits, {exit name: logits})``; the dict lists the exits
    in backbone (topological) order. The state dict holds ``backbone.*`` and
    ``heads.NAME.*``.

    Parameters
    ----------
    backbone:
        Any model tierflow can trace; it is deep-copied (the caller's module is never
        trained in place). Its forward must return one logits tensor ``[B, classes]``.
    example_inputs:
        Positional inputs for one forward pass (shapes of the attach nodes come from them).
    nodes:
        ``{exit name: backbone node}``; every node must be an articulation point
        (see :func:`tierflow.exits.articulation_points`).
    heads:
        ``{exit name: head module}``, the same names; a head maps the node's output to
        logits ``[B, classes]``.

    Raises
    ------
    ExitError
        If the names differ, a name is ``"final"``, or a node cannot carry an exit.

    Examples
    --------
    >>> from tierflow.exits import build_head, default_head_spec
    >>> from tierflow.models import resolve_model
    >>> backbone, inputs = resolve_model("zoo:lenet_wide")
    >>> head = build_head(default_head_spec((8, 12, 12), 10))
    >>> model = ExitModel(backbone, inputs, nodes={"exit1": "pool1"}, heads={"exit1": head})
    >>> final, exits = model(*inputs)
    >>> final.shape, list(exits)
    (torch.Size([1, 10]), ['exit1'])
    """

    def __init__(
        self,
        backbone: nn.Module,
        example_inputs: Sequence[Any],
        *,
        nodes: Mapping[str, str],
        heads: Mapping[str, nn.Module],
    ) -> None:
        super().__init__()
        if set(nodes) != set(heads):
            raise ExitError(f"exit names of nodes {sorted(nodes)} and heads {sorted(heads)} differ")
        if "final" in nodes:
            raise ExitError("'final' names the backbone's own classifier; rename that exit")
        self.backbone = copy.deepcopy(backbone)
        traced = trace(self.backbone, example_inputs)
        graph = describe(traced, example_inputs, name=type(backbone).__name__)
        validate_exit_nodes(graph, list(nodes.values()))
        order = {name: graph.index(node) for name, node in nodes.items()}
        names = sorted(nodes, key=order.__getitem__)
        self.graph: LayerGraph = graph
        self.nodes: dict[str, str] = {name: nodes[name] for name in names}
        self.heads = nn.ModuleDict({name: heads[name] for name in names})
        # Kept out of the module tree: its parameters are the backbone's, and registering
        # it would list them twice in the state dict.
        self.__dict__["_tapped"] = self._tap(traced.module, [self.nodes[n] for n in names])

    @property
    def exit_names(self) -> tuple[str, ...]:
        """Exit names in backbone order."""
        return tuple(self.nodes)

    def attach_shape(self, name: str) -> tuple[int, ...]:
        """Shape of one sample of exit ``name``'s input (its attach node's output)."""
        return tuple(self.graph[self.nodes[name]].outputs[0].shape[1:])

    def _tap(self, traced: fx.GraphModule, taps: list[str]) -> fx.GraphModule:
        graph = traced.graph
        by_name = {node.name: node for node in graph.nodes}
        output = next(node for node in graph.nodes if node.op == "output")
        output.args = ((output.args[0], tuple(by_name[name] for name in taps)),)
        root: dict[str, Any] = {}
        for node in graph.nodes:
            if node.op in ("call_module", "get_attr"):
                target = str(node.target)
                # The backbone's own object where it has one (shared weights); constants
                # that only the tracer created (fx's _tensor_constant*) from the traced copy.
                own = _lookup(self.backbone, target)
                root[target] = own if own is not None else _lookup(traced, target)
        graph.lint()
        return fx.GraphModule(root, graph, class_name="TappedBackbone")

    def forward(self, *inputs: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        final, features = self.__dict__["_tapped"](*inputs)
        if not isinstance(final, torch.Tensor):
            raise ExitError(
                f"the backbone returned {type(final).__name__}; an exit model needs a logits "
                "tensor [batch, classes]"
            )
        exits = {
            name: self.heads[name](feature)
            for name, feature in zip(self.nodes, features, strict=True)
        }
        return final, exits


def exit_logits(
    model: ExitModel, x: NDArray[np.float32], *, batch_size: int = 256
) -> dict[str, NDArray[np.float32]]:
    """Logits of every exit and of ``"final"`` for inputs ``x`` ``[N, ...]``, in eval mode.

    The result is ordered exits first (backbone order), then ``"final"``: the layout that
    :func:`tierflow.exits.calibrate` and :func:`tierflow.exits.evaluate_exits` expect.
    """
    chunks: dict[str, list[NDArray[np.float32]]] = {name: [] for name in model.exit_names}
    chunks[FINAL_EXIT] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                final, exits = model(torch.from_numpy(x[start : start + batch_size]))
                for name, values in exits.items():
                    chunks[name].append(values.numpy())
                chunks[FINAL_EXIT].append(final.numpy())
    finally:
        model.train(was_training)
    return {name: np.concatenate(parts) for name, parts in chunks.items()}
