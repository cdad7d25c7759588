"""The run directory ``tierflow train`` writes, and loading a trained exit model from it.

=============================  ==========================================================
``model.json``                 format version, backbone spec, input shape, dataset spec,
                               classes, exit policy, exits (name, node, head architecture),
                               the default thresholds, training settings
``weights.safetensors``        ``backbone.*`` and ``heads.NAME.*`` tensors, with
                               ``weights.safetensors.sha256``
``exits.json``                 :class:`~tierflow.plan.exit_options.ExitOptions`
``metrics.json``               test accuracy per exit, the default setting on test data,
                               training history and seconds
``checkpoint.safetensors``     the last epoch's weights and optimizer state (``--resume``)
=============================  ==========================================================

``resolve_model("run:DIR")`` returns the trained *backbone* (the planner and the build
split it like any model); :func:`load_exit_model` returns backbone and heads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tierflow.documents import check_version, read_json_object
from tierflow.errors import ExitError, ModelSpecError, TierflowError
from tierflow.exits.heads import HeadSpec, build_head
from tierflow.exits.model import ExitModel
from tierflow.train.checkpoint import load_tensors, save_tensors

RUN_FORMAT_VERSION = 1
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"
EXITS_FILE = "exits.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "checkpoint.safetensors"


@dataclass(frozen=True)
class ExitSpec:
    """One exit of a run: its name, the backbone node it reads and its head's architecture."""

    name: str
    node: str
    head: HeadSpec

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "node": self.node, "head": self.head.to_dict()}


@dataclass(frozen=True)
class RunConfig:
    """What ``model.json`` records: enough to rebuild the exit model without training code.

    Attributes
    ----------
    backbone:
        The backbone's model spec (``zoo:lenet_wide``, ``pkg.mod:factory``, ...).
    input_shape:
        Shape of the example input, batch dimension included (``[1, 1, 28, 28]``).
    dataset:
        Dataset spec the run was trained on (``mnist5k``).
    classes:
        Number of classes every classifier outputs.
    policy:
        Exit policy name (``max_softmax``, ``entropy``).
    exits:
        The exits in backbone order.
    thresholds:
        The default operating point (``{exit name: threshold}``; ``{}``: no early exit).
    training:
        The training settings, as data.
    seed:
        Seed of the initial weights (backbone and heads).
    """

    backbone: str
    input_shape: tuple[int, ...]
    dataset: str
    classes: int
    policy: str
    exits: tuple[ExitSpec, ...]
    thresholds: Mapping[str, float] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "tierflow_run_version": RUN_FORMAT_VERSION,
            "backbone": self.backbone,
            "input_shape": list(self.input_shape),
            "dataset": self.dataset,
            "classes": self.classes,
            "policy": self.policy,
            "exits": [spec.to_dict() for spec in self.exits],
            "thresholds": dict(self.thresholds),
            "training": dict(self.training),
            "seed": self.seed,
        }

    def save(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / MODEL_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, run_dir: Path) -> RunConfig:
        path = run_dir / MODEL_FILE
        data = read_json_object(path, what="run model description", error=ModelSpecError)
        check_version(
            data, "tierflow_run_version", RUN_FORMAT_VERSION, source=str(path), error=ModelSpecError
        )
        try:
            return cls(
                backbone=str(data["backbone"]),
                input_shape=tuple(int(d) for d in data["input_shape"]),
                dataset=str(data["dataset"]),
                classes=int(data["classes"]),
                policy=str(data["policy"]),
                exits=tuple(
                    ExitSpec(
                        name=str(e["name"]),
                        node=str(e["node"]),
                        head=HeadSpec.from_dict(e["head"], source=f"{path}: exits.{i}.head"),
                    )
                    for i, e in enumerate(data["exits"])
                ),
                thresholds={str(k): float(v) for k, v in data.get("thresholds", {}).items()},
                training=dict(data.get("training", {})),
                seed=int(data.get("seed", 0)),
            )
        except KeyError as exc:
            raise ModelSpecError(f"{path}: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError, ExitError) as exc:
            raise ModelSpecError(f"{path}: malformed run description: {exc}") from None


def _backbone(config: RunConfig) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    from tierflow.models import resolve_model  # models.resolve imports this module lazily

    return resolve_model(config.backbone, input_shape=config.input_shape, seed=config.seed)


def build_exit_model(config: RunConfig) -> tuple[ExitModel, tuple[torch.Tensor, ...]]:
    """A freshly initialised exit model as ``config`` describes it (seeded by ``config.seed``)."""
    backbone, inputs = _backbone(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        heads = {spec.name: build_head(spec.head) for spec in config.exits}
    model = ExitModel(
        backbone, inputs, nodes={spec.name: spec.node for spec in config.exits}, heads=heads
    )
    return model.eval(), inputs


def save_weights(model: ExitModel, run_dir: Path) -> None:
    """Write ``weights.safetensors`` (``backbone.*``, ``heads.NAME.*``) and its digest."""
    save_tensors(run_dir / WEIGHTS_FILE, model.state_dict(), {"format": "pt"})


def load_exit_model(run_dir: str | Path) -> tuple[ExitModel, tuple[torch.Tensor, ...]]:
    """The trained exit model of a run directory, and example inputs for it.

    The weights' ``.sha256`` is checked before any tensor is loaded.

    Raises
    ------
    ModelSpecError
        Naming the file at fault: a missing or malformed ``model.json``, missing weights or
        digest, a digest mismatch, or weights that do not fit the described model.

    Examples
    --------
    >>> model, inputs = load_exit_model("runs/lenet_wide")  # doctest: +SKIP
    >>> final, exits = model(*inputs)  # doctest: +SKIP
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise ModelSpecError(f"run directory {root} does not exist")
    config = RunConfig.load(root)
    try:
        model, inputs = build_exit_model(config)
    except (ExitError, ModelSpecError) as exc:
        raise ModelSpecError(f"run directory {root}: cannot rebuild the model: {exc}") from exc
    tensors, _ = load_tensors(root / WEIGHTS_FILE, what="weights file", error=ModelSpecError)
    own = set(model.state_dict())
    if own != set(tensors):
        raise ModelSpecError(
            f"weights file {root / WEIGHTS_FILE} does not fit {root / MODEL_FILE}: missing "
            f"{sorted(own - set(tensors))[:5]}, unexpected {sorted(set(tensors) - own)[:5]}"
        )
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ModelSpecError(f"weights file {root / WEIGHTS_FILE} does not fit: {exc}") from exc
    return model.eval(), inputs


def load_backbone(run_dir: str | Path) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The trained backbone of a run (what ``resolve_model("run:DIR")`` returns)."""
    try:
        model, inputs = load_exit_model(run_dir)
    except TierflowError as exc:
        if isinstance(exc, ModelSpecError):
            raise
        raise ModelSpecError(f"model spec 'run:{run_dir}': {exc}") from exc
    return model.backbone, inputs
