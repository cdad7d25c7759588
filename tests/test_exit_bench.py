"""`tierflow bench run:DIR`: an exit model measured on the testbed agrees with PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tierflow.cli.app import app
from tierflow.data import load_dataset
from tierflow.exits import MaxSoftmax, evaluate_exits, exit_logits
from tierflow.train import TrainSettings, load_exit_model, train_run

TWO_TIERS = {
    "tiers": [
        {"name": "phone", "kind": "device", "compute": {"speed": 0.5}},
        {"name": "cloud", "kind": "cloud", "compute": {"speed": 1.0}},
    ],
    "links": [{"from": "phone", "to": "cloud", "bandwidth_mbps": 50, "rtt_ms": 20}],
}
SAMPLES = 12


@pytest.mark.slow
def test_exit_bench_reports_what_the_runtime_answered(tmp_path: Path, monkeypatch):
    import tierflow.cli.commands_bench  # noqa: F401  (registers the command)

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    train_run(
        "zoo:lenet_wide",
        data="mnist5k",
        exits=["pool1"],
        out=run,
        settings=TrainSettings(epochs=1),
        progress=False,
    )
    topology = tmp_path / "two.yaml"
    topology.write_text(json.dumps(TWO_TIERS))  # JSON is YAML

    result = CliRunner().invoke(
        app,
        ["bench", f"run:{run}", "--topology", str(topology), "--samples", str(SAMPLES),
         "--profile-runs", "2", "--no-emulate", "--json", "--out", str(tmp_path / "out")],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    configs = {c["name"]: c for c in document["configs"]}
    assert set(configs) == {"exit-aware", "exit-unaware", "no-exit", "raw-offload"}
    # What the runtime answered equals what PyTorch computes on the same test inputs.
    model, _ = load_exit_model(run)
    test = load_dataset("mnist5k").test
    x, y = test.x[:SAMPLES], test.y[:SAMPLES]
    logits = exit_logits(model, x)
    backbone_accuracy = float(np.mean(np.argmax(logits["final"], axis=1) == y))
    assert configs["no-exit"]["accuracy"] == pytest.approx(backbone_accuracy)
    assert configs["raw-offload"]["accuracy"] == pytest.approx(backbone_accuracy)
    assert configs["no-exit"]["exit_rates"] == {"final": 1.0}
    for name in ("exit-aware", "exit-unaware"):
        config = configs[name]
        expected = evaluate_exits(logits, y, policy=MaxSoftmax(), thresholds=config["thresholds"])
        assert config["accuracy"] == pytest.approx(expected.accuracy)
        measured = {k: v for k, v in config["exit_rates"].items() if v > 0}
        assert measured == pytest.approx({k: v for k, v in expected.exit_rates.items() if v > 0})
        assert config["speedup_vs_no_exit"] > 0
        assert config["accuracy_drop_pp"] == pytest.approx(
            (backbone_accuracy - expected.accuracy) * 100
        )
    cpu = document["cpu"]
    assert cpu["samples"] == len(test) and cpu["speedup"] > 0
    assert (tmp_path / "out" / "report.md").read_text().startswith("# tierflow bench: early exits")
