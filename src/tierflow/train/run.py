"""One training run end to end: model and data in, a complete run directory out."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from tierflow.data import load_dataset
from tierflow.errors import DatasetError, TrainingError
from tierflow.exits.calibration import (
    AccuracyDrop,
    ExitEvaluation,
    calibrate,
    evaluate_exits,
    standalone_accuracy,
)
from tierflow.exits.heads import default_head_spec
from tierflow.exits.model import exit_logits
from tierflow.exits.options import exit_options
from tierflow.exits.policy import policy_by_name
from tierflow.exits.proposal import propose_exits, validate_exit_nodes
from tierflow.graph import LayerGraph, capture
from tierflow.models import resolve_model
from tierflow.plan.exit_options import FINAL_EXIT, ExitOptions
from tierflow.train.loop import EpochRecord, TrainSettings, train_exit_model
from tierflow.train.run_dir import (
    CHECKPOINT_FILE,
    EXITS_FILE,
    METRICS_FILE,
    ExitSpec,
    RunConfig,
    build_exit_model,
    save_weights,
)

METRICS_FORMAT_VERSION = 1
AUTO_EXIT_COUNT = 2  # `--exits auto` proposes up to this many (see propose_exits)


@dataclass(frozen=True)
class RunResult:
    """What a run produced (also on disk in the run directory).

    Attributes
    ----------
    config:
        The ``model.json`` contents, default thresholds included.
    history:
        Per-epoch training records.
    options:
        The operating points measured on validation data (``exits.json``).
    test_standalone:
        Test accuracy of every classifier answering every sample.
    test_default:
        Test accuracy and exit rates at the default thresholds.
    train_seconds:
        Wall-clock seconds of the training epochs run in this call.
    """

    config: RunConfig
    history: list[EpochRecord]
    options: ExitOptions
    test_standalone: dict[str, float]
    test_default: ExitEvaluation
    train_seconds: float

    def metrics(self) -> dict[str, Any]:
        """The ``metrics.json`` document."""
        final = self.test_standalone[FINAL_EXIT]
        return {
            "tierflow_metrics_version": METRICS_FORMAT_VERSION,
            "dataset": self.config.dataset,
            "train_seconds": round(self.train_seconds, 3),
            "test": {
                "accuracy": self.test_standalone,
                "default_setting": {
                    "thresholds": dict(self.config.thresholds),
                    "accuracy": self.test_default.accuracy,
                    "accuracy_drop_pp": round(100 * (final - self.test_default.accuracy), 4),
                    "exit_rates": self.test_default.exit_rates,
                    "exit_accuracy": self.test_default.exit_accuracy,
                },
            },
            "history": [record.to_dict() for record in self.history],
        }


def _exit_nodes(graph: LayerGraph, exits: Sequence[str] | str) -> list[str]:
    if exits == "auto":
        nodes = list(propose_exits(graph, AUTO_EXIT_COUNT))
        if not nodes:
            raise TrainingError(
                f"{graph.model} has no articulation point in its first part to propose an exit "
                "at; name exit nodes explicitly (tierflow graph lists the nodes)"
            )
        return nodes
    nodes = [exits] if isinstance(exits, str) else list(exits)  # one node, not its letters
    if not nodes:
        raise TrainingError("no exit nodes given; pass 'auto' or at least one node")
    validate_exit_nodes(graph, nodes)
    return sorted(nodes, key=graph.index)


def train_run(
    backbone: str,
    *,
    data: str,
    exits: Sequence[str] | str,
    out: Path,
    settings: TrainSettings,
    policy: str = "max_softmax",
    max_accuracy_drop_pp: float = 0.5,
    resume: bool = False,
    console: Console | None = None,
    progress: bool = True,
    head_channels: int = 32,
) -> RunResult:
    """Train ``backbone`` with early exits on ``data`` and write the run directory ``out``.

    Parameters
    ----------
    backbone:
        Model spec (``zoo:lenet_wide``); its example input is reshaped to the data's sample.
    data:
        Dataset spec (``mnist5k``, ``digits``, ``npz:FILE``, ``folder:DIR``).
    exits:
        ``"auto"`` (see :func:`tierflow.exits.propose_exits`) or backbone node names.
    out:
        The run directory (see :mod:`tierflow.train.run_dir`).
    settings:
        Training settings.
    policy:
        Exit policy name for calibration and ``exits.json``.
    head_channels:
        Channels of the convolution in heads on feature maps (the ``conv`` head kind).
    max_accuracy_drop_pp:
        The default thresholds keep accuracy within this many points of the final
        classifier's (calibrated on validation data with a margin).
    resume:
        Continue from ``out/checkpoint.safetensors``.

    Examples
    --------
    >>> result = train_run("zoo:lenet_wide", data="mnist5k", exits="auto",
    ...                    out=Path("runs/lenet_wide"), settings=TrainSettings(epochs=6))
    ...                    # doctest: +SKIP
    """
    exit_policy = policy_by_name(policy)
    splits = load_dataset(data, seed=settings.seed)
    input_shape = (1, *splits.sample_shape)
    model, inputs = resolve_model(backbone, input_shape=input_shape, seed=settings.seed)
    graph = capture(model, inputs, name=backbone)
    nodes = _exit_nodes(graph, exits)
    final_shape = graph[graph.outputs[0]].outputs[0].shape
    if final_shape != (1, splits.classes):
        raise DatasetError(
            f"{backbone} outputs {list(final_shape)} for one sample but dataset {data!r} has "
            f"{splits.classes} classes; the backbone must return [batch, {splits.classes}]"
        )
    config = RunConfig(
        backbone=backbone,
        input_shape=input_shape,
        dataset=data,
        classes=splits.classes,
        policy=exit_policy.name,
        exits=tuple(
            ExitSpec(
                f"exit{index}",
                node,
                replace(
                    default_head_spec(graph[node].outputs[0].shape[1:], splits.classes),
                    channels=head_channels,
                ),
            )
            for index, node in enumerate(nodes, start=1)
        ),
        training=settings.to_dict(),
        seed=settings.seed,
    )
    exit_model, _ = build_exit_model(config)
    config.save(out)
    started = time.perf_counter()
    history = train_exit_model(
        exit_model,
        splits.train,
        splits.val,
        settings,
        checkpoint=out / CHECKPOINT_FILE,
        resume=resume,
        console=console,
        progress=progress,
    )
    train_seconds = time.perf_counter() - started
    val_logits = exit_logits(exit_model, splits.val.x)
    thresholds = calibrate(
        val_logits,
        splits.val.y,
        policy=exit_policy,
        target=AccuracyDrop(max_accuracy_drop_pp),
    )
    options = exit_options(exit_model, val_logits, splits.val.y, policy=exit_policy)
    test_logits = exit_logits(exit_model, splits.test.x)
    test_labels = np.asarray(splits.test.y)
    result = RunResult(
        config=replace(config, thresholds=thresholds),
        history=history,
        options=options,
        test_standalone=standalone_accuracy(test_logits, test_labels),
        test_default=evaluate_exits(
            test_logits, test_labels, policy=exit_policy, thresholds=thresholds
        ),
        train_seconds=train_seconds,
    )
    save_weights(exit_model, out)
    options.save(out / EXITS_FILE)
    result.config.save(out)
    (out / METRICS_FILE).write_text(json.dumps(result.metrics(), indent=2) + "\n")
    return result
