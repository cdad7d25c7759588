"""From ``nn.Module`` to :class:`LayerGraph`: tracing, FLOP counting and block coarsening.

Names resolve on first use (Note [Lazy public names] in :mod:`tierflow`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tierflow._lazy import lazy_names

if TYPE_CHECKING:
    from tierflow.graph.capture import capture, describe
    from tierflow.graph.coarsen import coarsen
    from tierflow.graph.flops import node_flops
    from tierflow.graph.layer_graph import LayerGraph, LayerNode, TensorSpec
    from tierflow.graph.trace import ScopeFrame, Traced, trace

_LAZY = {
    "capture": "tierflow.graph.capture",
    "describe": "tierflow.graph.capture",
    "coarsen": "tierflow.graph.coarsen",
    "node_flops": "tierflow.graph.flops",
    "LayerGraph": "tierflow.graph.layer_graph",
    "LayerNode": "tierflow.graph.layer_graph",
    "TensorSpec": "tierflow.graph.layer_graph",
    "ScopeFrame": "tierflow.graph.trace",
    "Traced": "tierflow.graph.trace",
    "trace": "tierflow.graph.trace",
}


lazy_names(__name__, _LAZY)


__all__ = [
    "LayerGraph",
    "LayerNode",
    "ScopeFrame",
    "TensorSpec",
    "Traced",
    "capture",
    "coarsen",
    "describe",
    "node_flops",
    "trace",
]
