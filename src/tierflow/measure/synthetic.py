"""Synthetic layer graphs of a chosen size, for planner benchmarks and scaling tests.

Shapes follow real networks: a ``chain`` is a plain feed-forward stack (VGG-like); a
``dag`` adds the short skip connections and two-way branches of ResNet/Inception-style
blocks. Costs follow CNN trends: early layers have large activations and few FLOPs,
late layers small activations and many parameters.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from tierflow.graph.layer_graph import LayerGraph, LayerNode, TensorSpec
from tierflow.profile.profile import Profile

Shape = Literal["chain", "dag"]


def synthetic_graph(
    n_nodes: int, *, shape: Shape = "dag", seed: int = 0
) -> tuple[LayerGraph, Profile]:
    """A graph of ``n_nodes`` nodes (one input) and a host profile for it.

    Examples
    --------
    >>> graph, profile = synthetic_graph(200, shape="dag")
    >>> len(graph)
    200
    """
    if n_nodes < 2:
        raise ValueError("a synthetic graph needs at least two nodes")
    rng = np.random.default_rng(seed)
    depth = np.linspace(0.0, 1.0, n_nodes)
    # Activations shrink ~100× and per-node compute grows with depth, as in CNNs.
    out_bytes = (4e5 * 100.0 ** (-depth) * rng.uniform(0.5, 1.5, n_nodes)).astype(int) * 4
    node_ms = rng.gamma(2.0, 0.05, n_nodes) * (1 + depth)
    param_bytes = (rng.uniform(0, 2e5, n_nodes) * (1 + 10 * depth)).astype(int)
    nodes: list[LayerNode] = []
    for i in range(n_nodes):
        name = "input" if i == 0 else f"n{i}"
        inputs: list[str] = []
        if i > 0:
            inputs.append(nodes[-1].name)
            if shape == "dag" and i > 2 and rng.random() < 0.35:
                skip = int(rng.integers(max(0, i - 8), i - 1))  # a residual or branch join
                inputs.append(nodes[skip].name)
        nodes.append(
            LayerNode(
                name=name,
                op="placeholder" if i == 0 else "call_function",
                target="input" if i == 0 else "synthetic",
                module_type=None,
                flops=0 if i == 0 else int(node_ms[i] * 1e7),
                param_bytes=0 if i == 0 else int(param_bytes[i]),
                outputs=(TensorSpec((int(out_bytes[i]) // 4,), "float32", int(out_bytes[i])),),
                inputs=tuple(dict.fromkeys(inputs)),
                members=(name,),
            )
        )
    graph = LayerGraph(
        model=f"synthetic-{shape}-{n_nodes}", nodes=tuple(nodes), outputs=(nodes[-1].name,)
    )
    profile = Profile(
        model=graph.model,
        machine="synthetic",
        threads=1,
        runs=1,
        node_ms={
            n.name: (0.0 if n.op == "placeholder" else float(node_ms[i]))
            for i, n in enumerate(nodes)
        },
        whole_ms=float(node_ms[1:].sum()),
    )
    return graph, profile
