"""Indicator terms that make the placement program's costs expectations over early exits.

The program (:mod:`tierflow.plan.milp`) pays for a value crossing a link, and for a link
in use, through indicator variables, each the largest of some ``z``. With early exits
those costs are weighted by reach probabilities (docs/concepts.md, "Early exits in the
cost model"); this module splits each weighted maximum into ordinary indicators with
positive weights, so the program keeps the structure whose LP relaxation is integral.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tierflow.plan.cost_model import CostModel, FloatArray, IntArray


@dataclass(frozen=True)
class Terms:
    """Indicator variables that are each the largest of some ``z`` (per link).

    Term ``k`` belongs to node ``node[k]`` and weighs ``weight[k]`` in the cost. Row ``i``
    says term ``row_term[i]`` is at least ``z[row_node[i]] − z[row_producer[i]]`` (for
    "used" levels the producer is the node itself and the row reads ``used ≥ z[n]``).
    """

    node: IntArray
    weight: FloatArray
    row_term: IntArray
    row_producer: IntArray
    row_node: IntArray


def members(terms: Terms) -> list[IntArray]:
    order = np.argsort(terms.row_term, kind="stable")
    bounds = np.searchsorted(terms.row_term[order], np.arange(len(terms.weight) + 1))
    nodes = terms.row_node[order]
    return [nodes[bounds[k] : bounds[k + 1]] for k in range(len(terms.weight))]


def _levels(values: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Distinct positive values, descending, and their steps ``λ_j − λ_{j+1}`` (λ_{m+1} = 0)."""
    levels = np.unique(values[values > 0])[::-1]
    return levels, levels - np.append(levels[1:], 0.0)


def expected_terms(cost: CostModel, reach: FloatArray) -> tuple[Terms, Terms]:
    """Crossing and "used" terms whose weighted sum is an expectation (see the note below).

    Note (levels): the expected bytes of ``u``'s value on link ``l`` are its size times the
    largest reach among its consumers above ``l``. With the distinct consumer reaches
    ``λ_1 > … > λ_m``, ``max_v w_v·y_v = Σ_j (λ_j − λ_{j+1}) · max_{v: w_v ≥ λ_j} y_v``,
    and each ``max`` is an ordinary crossing indicator with a positive weight. The program
    keeps the closure structure whose LP relaxation is integral, instead of the fractional
    rows ``c ≥ w_v · (z_v − z_u)`` would give. "Used" links are decomposed the same way.
    """
    consumers = cost.consumers()
    node: list[int] = []
    weight: list[float] = []
    row_term: list[int] = []
    row_producer: list[int] = []
    row_node: list[int] = []
    for u in range(cost.n_nodes):
        users = consumers[u]
        levels, steps = _levels(reach[users])
        for level, step in zip(levels, steps, strict=True):
            covered = users[reach[users] >= level]
            row_term.extend([len(node)] * len(covered))
            row_producer.extend([u] * len(covered))
            row_node.extend(int(v) for v in covered)
            node.append(u)
            weight.append(float(step))
    crossings = Terms(
        np.array(node, dtype=np.int64),
        np.array(weight),
        np.array(row_term, dtype=np.int64),
        np.array(row_producer, dtype=np.int64),
        np.array(row_node, dtype=np.int64),
    )
    # used[j] ≥ z[n] for every node at reach ≥ λ_j; a node with a consumer at that level is
    # implied by the consumer (z[n] ≤ z[v]), so only the level's last nodes need a row.
    levels, steps = _levels(reach)
    best_user = np.zeros(cost.n_nodes)
    np.maximum.at(best_user, cost.edge_src, reach[cost.edge_dst])
    level_rows = [np.flatnonzero((reach >= level) & (best_user < level)) for level in levels]
    frontier = np.concatenate(level_rows) if level_rows else np.zeros(0, dtype=np.int64)
    used = Terms(
        np.zeros(len(levels), dtype=np.int64),
        steps,
        np.repeat(np.arange(len(levels)), [len(r) for r in level_rows]).astype(np.int64),
        frontier,
        frontier,
    )
    return crossings, used
