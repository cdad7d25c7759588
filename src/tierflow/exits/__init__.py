"""Early exits: side classifiers on a backbone, where they may sit, and when they answer.

:class:`ExitModel` attaches heads to articulation points of a backbone's graph
(:func:`propose_exits`, :func:`articulation_points`); :func:`calibrate` picks confidence
thresholds on validation data with a safety margin; :func:`exit_options` measures the
operating points the planner chooses among (``exits.json``).
"""

from tierflow.exits.calibration import (
    AccuracyDrop,
    CalibrationTarget,
    ExitEvaluation,
    ExitRate,
    calibrate,
    evaluate_exits,
    standalone_accuracy,
)
from tierflow.exits.heads import HeadSpec, build_head, default_head_spec
from tierflow.exits.model import ExitModel, exit_logits
from tierflow.exits.options import exit_options, measure_head, operating_points
from tierflow.exits.policy import (
    ExitPolicy,
    MaxSoftmax,
    NormalisedEntropy,
    policy_by_name,
    policy_names,
)
from tierflow.exits.proposal import articulation_points, propose_exits, validate_exit_nodes

__all__ = [
    "AccuracyDrop",
    "CalibrationTarget",
    "ExitEvaluation",
    "ExitModel",
    "ExitPolicy",
    "ExitRate",
    "HeadSpec",
    "MaxSoftmax",
    "NormalisedEntropy",
    "articulation_points",
    "build_head",
    "calibrate",
    "default_head_spec",
    "evaluate_exits",
    "exit_logits",
    "exit_options",
    "measure_head",
    "operating_points",
    "policy_by_name",
    "policy_names",
    "propose_exits",
    "standalone_accuracy",
    "validate_exit_nodes",
]
