"""Training exit models: joint BranchyNet-style training, checkpoints and run directories.

:func:`train_run` takes a model spec and a dataset spec to a complete run directory
(``model.json``, ``weights.safetensors``, ``exits.json``, ``metrics.json``,
``checkpoint.safetensors``); :func:`load_exit_model` reads one back.
"""

from tierflow.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from tierflow.train.loop import EpochRecord, TrainSettings, train_exit_model
from tierflow.train.run import RunResult, train_run
from tierflow.train.run_dir import (
    ExitSpec,
    RunConfig,
    build_exit_model,
    load_backbone,
    load_exit_model,
    save_weights,
)

__all__ = [
    "Checkpoint",
    "EpochRecord",
    "ExitSpec",
    "RunConfig",
    "RunResult",
    "TrainSettings",
    "build_exit_model",
    "load_backbone",
    "load_checkpoint",
    "load_exit_model",
    "save_checkpoint",
    "save_weights",
    "train_exit_model",
    "train_run",
]
