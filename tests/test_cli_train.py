"""`tierflow train`, run for real on scikit-learn's digits."""

from __future__ import annotations

import json

import torch
from torch import nn
from typer.testing import CliRunner

# Importing the command modules registers their commands on the app, as main() does.
import tierflow.cli.commands_model
import tierflow.cli.commands_train  # noqa: F401
from tierflow.cli.app import app

runner = CliRunner()


def digits_cnn() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """A small CNN for 1x8x8 digits, resolved as the model spec ``test_cli_train:digits_cnn``."""
    backbone = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # "_2": [8, 4, 4]
        nn.Flatten(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10),
    )  # fmt: skip
    return backbone, (torch.zeros(1, 1, 8, 8),)


def test_train_writes_a_run_that_tierflow_graph_reads_as_run_spec(tmp_path):
    out = tmp_path / "run"

    result = runner.invoke(
        app,
        ["train", "test_cli_train:digits_cnn", "--data", "digits", "--exits", "_2",
         "--epochs", "1", "--out", str(out)],
    )  # fmt: skip
    graph = runner.invoke(app, ["graph", f"run:{out}", "--json"])

    assert result.exit_code == 0, result.output
    assert "exit1" in result.output and "final" in result.output
    assert (out / "weights.safetensors.sha256").is_file()
    assert graph.exit_code == 0, graph.output
    assert "_2" in {node["name"] for node in json.loads(graph.output)["nodes"]}


def test_train_json_prints_the_metrics_document(tmp_path):
    result = runner.invoke(
        app,
        ["train", "test_cli_train:digits_cnn", "--data", "digits", "--epochs", "1",
         "--exit-weights", "1,0.5", "--max-accuracy-drop", "1", "--out", str(tmp_path), "--json"],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["test"]["default_setting"]["exit_rates"].keys() == {"exit1", "final"}
    assert len(metrics["history"]) == 1


def test_an_exit_at_the_model_output_exits_2_naming_the_node(tmp_path):
    result = runner.invoke(
        app,
        ["train", "test_cli_train:digits_cnn", "--data", "digits", "--exits", "_6",
         "--epochs", "1", "--out", str(tmp_path)],
    )  # fmt: skip

    assert result.exit_code == 2
    assert "exit node '_6' cannot carry an exit: it is a model output" in result.output
