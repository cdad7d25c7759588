"""Early exits: side classifiers on a backbone, where they may sit, and when they answer.

:class:`ExitModel` attaches heads to articulation points of a backbone's graph
(:func:`propose_exits`, :func:`articulation_points`); :func:`calibrate` picks confidence
thresholds on validation data with a safety margin; :func:`exit_options` measures the
operating points the planner chooses among (``exits.json``).

Names resolve on first use (Note [Lazy public names] in :mod:`tierflow`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tierflow._lazy import lazy_names

if TYPE_CHECKING:
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

_LAZY = {
    "AccuracyDrop": "tierflow.exits.calibration",
    "CalibrationTarget": "tierflow.exits.calibration",
    "ExitEvaluation": "tierflow.exits.calibration",
    "ExitRate": "tierflow.exits.calibration",
    "calibrate": "tierflow.exits.calibration",
    "evaluate_exits": "tierflow.exits.calibration",
    "standalone_accuracy": "tierflow.exits.calibration",
    "HeadSpec": "tierflow.exits.heads",
    "build_head": "tierflow.exits.heads",
    "default_head_spec": "tierflow.exits.heads",
    "ExitModel": "tierflow.exits.model",
    "exit_logits": "tierflow.exits.model",
    "exit_options": "tierflow.exits.options",
    "measure_head": "tierflow.exits.options",
    "operating_points": "tierflow.exits.options",
    "ExitPolicy": "tierflow.exits.policy",
    "MaxSoftmax": "tierflow.exits.policy",
    "NormalisedEntropy": "tierflow.exits.policy",
    "policy_by_name": "tierflow.exits.policy",
    "policy_names": "tierflow.exits.policy",
    "articulation_points": "tierflow.exits.proposal",
    "propose_exits": "tierflow.exits.proposal",
    "validate_exit_nodes": "tierflow.exits.proposal",
}


lazy_names(__name__, _LAZY)


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
