"""Naming the constraint that makes a planning problem infeasible."""

from __future__ import annotations

from typing import Any

import numpy as np

from tierflow.errors import InfeasiblePlanError
from tierflow.plan.cost_model import CostModel, _replace
from tierflow.plan.milp import solve
from tierflow.plan.objective import Objective


def explain_infeasible(cost: CostModel, objective: Objective) -> str:
    """Say which constraint family, when lifted alone, makes the problem feasible.

    Tries lifting the SLO, the memory limits, the private-input rule and the pins in
    turn (each a re-solve); when no single one suffices, says that they conflict jointly.
    """
    relaxations: dict[str, dict[str, Any]] = {
        "the latency SLO": {"slo_ms": None},
        "tier memory limits": {"memory_bytes": np.full(cost.n_tiers, np.inf)},
        "--private-input": {"private_nodes": np.zeros(0, dtype=np.int64)},
        "pinned nodes": {"allowed": cost.inputs_pinned_only()},
    }
    culprits = []
    for label, change in relaxations.items():
        if not _is_active(cost, label):
            continue
        try:
            solve(_replace(cost, **change), objective, time_limit_s=10)
        except InfeasiblePlanError:
            continue
        culprits.append(label)
    detail = _memory_detail(cost)
    if culprits:
        return (
            "no placement satisfies the constraints; lifting "
            + " or ".join(culprits)
            + " alone would make one possible"
            + detail
        )
    return "no placement satisfies the constraints together" + detail


def _is_active(cost: CostModel, label: str) -> bool:
    if label == "the latency SLO":
        return cost.slo_ms is not None
    if label == "tier memory limits":
        return bool(np.isfinite(cost.memory_bytes).any())
    if label == "--private-input":
        return len(cost.private_nodes) > 0
    return not np.array_equal(cost.allowed, cost.inputs_pinned_only())


def _memory_detail(cost: CostModel) -> str:
    if not np.isfinite(cost.memory_bytes).any():
        return ""
    need = cost.param_bytes.sum() / 2**20
    have = ", ".join(
        f"{name} {limit / 2**20:.1f} MiB"
        for name, limit in zip(cost.tier_names, cost.memory_bytes, strict=True)
        if np.isfinite(limit)
    )
    return f" (model parameters total {need:.1f} MiB; limits: {have})"
