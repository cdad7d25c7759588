"""Planning: the optimal placement of a model's layers on a tier topology (pure)."""

from tierflow.plan.cost_model import Constraints, CostModel, build_cost_model
from tierflow.plan.evaluate import Prediction, evaluate
from tierflow.plan.exit_planner import exit_unaware_plan, plan_with_exits
from tierflow.plan.objective import CRITERIA, Objective
from tierflow.plan.plan import PLAN_FORMAT_VERSION, BaselineResult, Cut, Plan
from tierflow.plan.planner import plan, plan_cost_model

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
