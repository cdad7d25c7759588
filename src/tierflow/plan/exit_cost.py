"""Early exits in the cost model: reach probabilities and the expected-cost instance.

An exit head reads the output of one backbone node, its *attach node*. A sample that
passes an active exit's threshold leaves there, so every node after the attach node is
reached with a smaller probability. Given the reach of every node, the cost model's costs
become expectations over inputs (formulas: docs/concepts.md, "Early exits in the cost
model"); this module computes the reaches and builds that instance. Pure arrays, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tierflow.errors import PlanError
from tierflow.plan.cost_model import BoolArray, CostModel, FloatArray, IntArray, _replace


def descendants(cost: CostModel, node: int) -> BoolArray:
    """Nodes that depend on ``node``'s output (``node`` itself excluded)."""
    inside = np.zeros(cost.n_nodes, dtype=bool)
    # Node order is topological, so one pass over the edges by consumer settles every node.
    order = np.argsort(cost.edge_dst, kind="stable")
    for u, v in zip(cost.edge_src[order], cost.edge_dst[order], strict=True):
        if u == node or inside[u]:
            inside[v] = True
    return inside


def check_articulation(cost: CostModel, node: int, *, exit_name: str) -> BoolArray:
    """Check that everything after ``node`` depends on the input only through it.

    Returns the descendants of ``node``. Only then can a tier answer right after the node
    and skip the rest, and only then are the reach events of several exits nested, which
    the expected cost relies on.

    Raises
    ------
    PlanError
        Naming the exit and the edge that bypasses its node, or the output it misses.
    """
    after = descendants(cost, node)
    names = cost.node_names
    if node in cost.output_nodes:
        raise PlanError(
            f"exit {exit_name!r} attaches at node {names[node]!r}, a model output: an exit "
            "there answers nothing earlier than the final classifier"
        )
    bypass = after[cost.edge_dst] & ~after[cost.edge_src] & (cost.edge_src != node)
    if bypass.any():
        edge = int(np.flatnonzero(bypass)[0])
        raise PlanError(
            f"exit {exit_name!r} attaches at node {names[node]!r}, which is not an "
            f"articulation node: {names[cost.edge_dst[edge]]!r} also reads "
            f"{names[cost.edge_src[edge]]!r}, computed before it"
        )
    missed = [int(o) for o in cost.output_nodes if o != node and not after[o]]
    if missed:
        raise PlanError(
            f"exit {exit_name!r} attaches at node {names[node]!r}, but the model output "
            f"{names[missed[0]]!r} does not depend on it"
        )
    return after


def reach_from_exits(
    cost: CostModel, exit_nodes: IntArray | Sequence[int], exit_rates: FloatArray | Sequence[float]
) -> FloatArray:
    """Probability that an input reaches each node, given the active exits.

    ``w[n] = 1 − Σ_e r_e · [n depends on attach(e)]``: a sample answered at exit ``e``
    still computes ``attach(e)`` and everything before it, and nothing after it.
    """
    reach = np.ones(cost.n_nodes)
    for node, rate in zip(exit_nodes, exit_rates, strict=True):
        reach -= rate * descendants(cost, int(node))
    # Rates sum to at most 1, so only rounding takes a reach below 0.
    return np.clip(reach, 0.0, 1.0)


def expected_cost_model(
    cost: CostModel,
    exit_nodes: IntArray,
    exit_rates: FloatArray,
    exit_out_bytes: FloatArray,
    head_ms: FloatArray,
) -> CostModel:
    """The instance whose costs are expectations over inputs with these exits active.

    Parameters
    ----------
    cost:
        The instance without exits.
    exit_nodes, exit_rates, exit_out_bytes:
        Per active exit: attach node (index), fraction of all inputs answered there, and
        bytes of its logits (which return to the first tier from the attach node's tier).
    head_ms:
        ``[X, T]`` latency of each active exit's head on each tier. It runs right after
        its attach node, on the same tier and for the same inputs, so it is added to the
        attach node's compute and weighted by the attach node's reach.
    """
    exit_nodes = np.asarray(exit_nodes, dtype=np.int64)
    if len(exit_nodes) == 0:  # no early exit: every input is one full input
        return cost
    compute = cost.compute_ms.copy()
    np.add.at(compute, exit_nodes, head_ms)
    return _replace(
        cost,
        compute_ms=compute,
        reach=reach_from_exits(cost, exit_nodes, exit_rates),
        exit_nodes=exit_nodes,
        exit_rates=np.asarray(exit_rates, dtype=np.float64),
        exit_out_bytes=np.asarray(exit_out_bytes, dtype=np.float64),
    )


def worst_case_cost_model(expected: CostModel) -> CostModel:
    """The cost of an input that no exit answers: every node reached, every head paid."""
    return _replace(
        expected,
        reach=None,
        exit_nodes=np.zeros(0, dtype=np.int64),
        exit_rates=np.zeros(0),
        exit_out_bytes=np.zeros(0),
    )
