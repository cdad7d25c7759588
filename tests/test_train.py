"""Joint training, checkpoints (resume, tampering) and the run directory."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tierflow.data import load_dataset
from tierflow.errors import ModelSpecError, TrainingError
from tierflow.exits import ExitModel
from tierflow.graph import capture
from tierflow.models import resolve_model
from tierflow.plan.exit_options import ExitOptions
from tierflow.train import (
    TrainSettings,
    load_checkpoint,
    load_exit_model,
    train_exit_model,
    train_run,
)


def digits_cnn() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """A small CNN for scikit-learn's 1x8x8 digits (a ``module:factory`` model spec)."""
    backbone = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # "_2": [8, 4, 4]
        nn.Flatten(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10),
    )  # fmt: skip
    return backbone, (torch.zeros(1, 1, 8, 8),)


def exit_model() -> ExitModel:
    torch.manual_seed(0)
    backbone, inputs = digits_cnn()
    head = nn.Sequential(nn.Flatten(), nn.Linear(128, 10))
    return ExitModel(backbone, inputs, nodes={"exit1": "_2"}, heads={"exit1": head})


def fit(model, splits, settings, **options):
    return train_exit_model(model, splits.train, splits.val, settings, progress=False, **options)


@pytest.fixture(scope="module")
def splits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train_run(
        "test_train:digits_cnn",
        data="digits",
        exits="auto",
        out=out,
        settings=TrainSettings(epochs=2),
        progress=False,
    )
    return out


def test_two_epochs_equal_one_epoch_then_a_resumed_one(splits, tmp_path):
    # A constant rate: a cosine schedule decays over the run's own epoch count, so a
    # 1-epoch run extended to 2 follows a different schedule than a 2-epoch run.
    straight, first, resumed = exit_model(), exit_model(), exit_model()
    checkpoint = tmp_path / "checkpoint.safetensors"
    once, twice = (
        TrainSettings(epochs=1, schedule="constant"),
        TrainSettings(epochs=2, schedule="constant"),
    )

    full = fit(straight, splits, twice)
    fit(first, splits, once, checkpoint=checkpoint)
    history = fit(resumed, splits, twice, checkpoint=checkpoint, resume=True)

    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=1e-4, atol=1e-5)
    assert [r.epoch for r in history] == [1, 2]
    assert history[1].val_accuracy == pytest.approx(full[1].val_accuracy, abs=0.01)
    assert load_checkpoint(checkpoint).epoch == 2


def test_a_tampered_checkpoint_is_refused(splits, tmp_path):
    checkpoint = tmp_path / "checkpoint.safetensors"
    fit(exit_model(), splits, TrainSettings(epochs=1), checkpoint=checkpoint)
    data = bytearray(checkpoint.read_bytes())
    data[-1] ^= 0xFF
    checkpoint.write_bytes(bytes(data))

    with pytest.raises(TrainingError, match=r"checkpoint\.safetensors has sha256"):
        fit(exit_model(), splits, TrainSettings(epochs=2), checkpoint=checkpoint, resume=True)


def test_resuming_with_other_settings_is_refused(splits, tmp_path):
    checkpoint = tmp_path / "checkpoint.safetensors"
    fit(exit_model(), splits, TrainSettings(epochs=1), checkpoint=checkpoint)

    with pytest.raises(TrainingError, match="lr"):
        settings = TrainSettings(epochs=2, lr=0.1)
        fit(exit_model(), splits, settings, checkpoint=checkpoint, resume=True)


def test_exit_weights_must_cover_every_exit_and_the_final_classifier(splits):
    with pytest.raises(TrainingError, match="exit_weights has 3 values; the model needs 2"):
        fit(exit_model(), splits, TrainSettings(epochs=1, exit_weights=(1, 1, 1)))


def test_the_run_directory_holds_every_document(run_dir):
    files = {path.name for path in run_dir.iterdir()}
    config = json.loads((run_dir / "model.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())

    assert {
        "model.json",
        "weights.safetensors",
        "weights.safetensors.sha256",
        "exits.json",
        "metrics.json",
        "checkpoint.safetensors",
        "checkpoint.safetensors.sha256",
    } <= files
    assert config["backbone"] == "test_train:digits_cnn"
    assert config["input_shape"] == [1, 1, 8, 8]
    # auto: the smallest output in the cheap part, the latest of equals (flatten after pool)
    assert [e["node"] for e in config["exits"]] == ["_3"]
    assert set(metrics["test"]["accuracy"]) == {"exit1", "final"}
    assert len(metrics["history"]) == 2
    assert ExitOptions.load(run_dir / "exits.json").heads[0].node == "_3"


def test_a_run_loads_back_and_its_backbone_resolves_as_run_spec(run_dir):
    model, inputs = load_exit_model(run_dir)
    backbone, backbone_inputs = resolve_model(f"run:{run_dir}")

    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(backbone(x), model(x)[0])
    assert backbone_inputs[0].shape == inputs[0].shape == (1, 1, 8, 8)
    assert "_3" in capture(backbone, backbone_inputs)


def test_tampered_run_weights_are_refused(run_dir, tmp_path):
    copy = tmp_path / "run"
    copy.mkdir()
    for path in run_dir.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    weights = copy / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))

    with pytest.raises(ModelSpecError, match=r"weights\.safetensors has sha256"):
        load_exit_model(copy)
    with pytest.raises(ModelSpecError, match="sha256"):
        resolve_model(f"run:{copy}")


def test_the_cosine_schedule_decays_from_the_peak_rate_to_zero():
    settings = TrainSettings(epochs=2, lr=0.01)

    rates = [settings.lr_at(step, 100) for step in (0, 50, 100)]

    assert rates == pytest.approx([0.01, 0.005, 0.0])
    assert TrainSettings(lr=0.01, schedule="constant").lr_at(99, 100) == 0.01


def test_an_unknown_schedule_is_refused_by_name():
    with pytest.raises(TrainingError, match="schedule"):
        TrainSettings(schedule="linear")  # type: ignore[arg-type]
