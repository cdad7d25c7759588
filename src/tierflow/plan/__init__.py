"""Planning: the optimal placement of a model's layers on a tier topology (pure).

Names resolve on first use (Note [Lazy public names] in :mod:`tierflow`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tierflow._lazy import lazy_names

if TYPE_CHECKING:
    from tierflow.plan.cost_model import Constraints, CostModel, build_cost_model
    from tierflow.plan.evaluate import Prediction, evaluate
    from tierflow.plan.exit_planner import exit_unaware_plan, plan_with_exits
    from tierflow.plan.objective import CRITERIA, Objective
    from tierflow.plan.plan import PLAN_FORMAT_VERSION, BaselineResult, Cut, Plan
    from tierflow.plan.planner import plan, plan_cost_model

_LAZY = {
    "Constraints": "tierflow.plan.cost_model",
    "CostModel": "tierflow.plan.cost_model",
    "build_cost_model": "tierflow.plan.cost_model",
    "Prediction": "tierflow.plan.evaluate",
    "evaluate": "tierflow.plan.evaluate",
    "exit_unaware_plan": "tierflow.plan.exit_planner",
    "plan_with_exits": "tierflow.plan.exit_planner",
    "CRITERIA": "tierflow.plan.objective",
    "Objective": "tierflow.plan.objective",
    "PLAN_FORMAT_VERSION": "tierflow.plan.plan",
    "BaselineResult": "tierflow.plan.plan",
    "Cut": "tierflow.plan.plan",
    "Plan": "tierflow.plan.plan",
    "plan": "tierflow.plan.planner",
    "plan_cost_model": "tierflow.plan.planner",
}


lazy_names(__name__, _LAZY)


__all__ = [
    "CRITERIA",
    "PLAN_FORMAT_VERSION",
    "BaselineResult",
    "Constraints",
    "CostModel",
    "Cut",
    "Objective",
    "Plan",
    "Prediction",
    "build_cost_model",
    "evaluate",
    "exit_unaware_plan",
    "plan",
    "plan_cost_model",
    "plan_with_exits",
]
