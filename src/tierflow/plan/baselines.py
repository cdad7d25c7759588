"""Baselines every plan is compared with, under the same cost model.

* ``all-<tier>``: every layer on one tier (the input still starts on the first tier).
* ``neurosurgeon``: the best single cut of the topological order between two tiers,
  as Neurosurgeon (Kang et al., ASPLOS 2017) does for a chain between phone and cloud.
* ``dads``: the best two-tier placement of the DAG, found as DADS (Hu et al., INFOCOM
  2019) does with a minimum s-t cut, between the first tier and the best other tier.

Like the systems they stand for, baselines ignore tierflow's constraints (memory, pins,
privacy, SLO); a baseline that breaks one is reported with ``feasible = False``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tierflow.errors import PlanError
from tierflow.plan.cost_model import CostModel, IntArray
from tierflow.plan.evaluate import Prediction, evaluate, link_weights
from tierflow.plan.milp import solve
from tierflow.plan.objective import Objective


@dataclass(frozen=True)
class Baseline:
    name: str
    description: str
    tiers: IntArray
    prediction: Prediction


def all_on_each_tier(cost: CostModel) -> list[Baseline]:
    baselines = []
    for tier, name in enumerate(cost.tier_names):
        tiers = np.full(cost.n_nodes, tier, dtype=np.int64)
        tiers[cost.input_nodes] = 0
        baselines.append(
            Baseline(f"all-{name}", f"every layer on {name}", tiers, evaluate(cost, tiers))
        )
    return baselines


def neurosurgeon(cost: CostModel, objective: Objective) -> Baseline:
    """Best split of the topological order into a prefix on one tier, the rest on a higher one."""
    weights = link_weights(cost)
    unconstrained = cost.without_constraints()
    best: tuple[float, Baseline] | None = None
    first = int(cost.input_nodes.max()) + 1 if len(cost.input_nodes) else 0
    for low in range(cost.n_tiers):
        for high in range(low + 1, cost.n_tiers):
            for cut in range(first, cost.n_nodes + 1):
                tiers = np.full(cost.n_nodes, high, dtype=np.int64)
                tiers[:cut] = low
                tiers[cost.input_nodes] = 0
                if np.any(tiers[cost.edge_src] > tiers[cost.edge_dst]):
                    continue  # an input consumed after the cut by a lower tier cannot happen
                value = evaluate(unconstrained, tiers).cost(objective, weights)
                if best is None or value < best[0]:
                    description = (
                        f"first {cut} nodes on {cost.tier_names[low]}, "
                        f"the rest on {cost.tier_names[high]}"
                    )
                    best = (
                        value,
                        Baseline("neurosurgeon", description, tiers, evaluate(cost, tiers)),
                    )
    if best is None:
        raise PlanError("neurosurgeon baseline needs at least two tiers")
    return best[1]


def dads(cost: CostModel, objective: Objective) -> Baseline:
    """Best optimal two-tier placement between the first tier and one other tier."""
    weights = link_weights(cost)
    unconstrained = cost.without_constraints()
    best: tuple[float, Baseline] | None = None
    for high in range(1, cost.n_tiers):
        tiers = solve(unconstrained.restricted([0, high]), objective).tiers
        value = evaluate(unconstrained, tiers).cost(objective, weights)
        if best is None or value < best[0]:
            description = f"min-cut between {cost.tier_names[0]} and {cost.tier_names[high]}"
            best = (value, Baseline("dads", description, tiers, evaluate(cost, tiers)))
    if best is None:
        raise PlanError("dads baseline needs at least two tiers")
    return best[1]


def baselines(cost: CostModel, objective: Objective) -> list[Baseline]:
    """All baselines for ``cost``; two-tier ones only when there are two or more tiers."""
    result = all_on_each_tier(cost)
    if cost.n_tiers > 1:
        result += [neurosurgeon(cost, objective), dads(cost, objective)]
    return result
