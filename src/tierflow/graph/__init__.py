"""From ``nn.Module`` to :class:`LayerGraph`: tracing, FLOP counting and block coarsening."""

from tierflow.graph.capture import capture, describe
from tierflow.graph.coarsen import coarsen
from tierflow.graph.flops import node_flops
from tierflow.graph.layer_graph import LayerGraph, LayerNode, TensorSpec
from tierflow.graph.trace import ScopeFrame, Traced, trace

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
