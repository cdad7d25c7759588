"""`tierflow compress`, run for real on zoo:lenet with a small training subset."""

from __future__ import annotations

import json

from typer.testing import CliRunner

# Importing the command module registers its command on the app, as main() does.
import tierflow.cli.commands_compress
import tierflow.cli.commands_train  # noqa: F401
from tierflow.cli.app import app

runner = CliRunner()

TINY = [
    "compress", "zoo:lenet", "--data", "mnist5k", "--cut", "pool2",
    "--variants", "fp32,int8-dynamic", "--codecs", "int4+zstd,fp16", "--runs", "3",
    "--train-epochs", "1", "--train-limit", "1000",
    "--bottleneck-channels", "2", "--bottleneck-epochs", "1",
]  # fmt: skip


def test_compress_json_prints_measured_variants_and_codecs_and_writes_a_plot(tmp_path):
    result = runner.invoke(app, [*TINY, "--json", "--out", str(tmp_path)])

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [v["name"] for v in document["variants"]] == ["fp32", "int8-dynamic"]
    for variant in document["variants"]:
        assert {"name", "latency_ms", "speedup", "size_bytes", "accuracy"} <= variant.keys()
        assert 0.0 <= variant["accuracy"] <= 1.0 and variant["latency_ms"] > 0
    names = [c["name"] for c in document["codecs"]]
    assert names == ["fp32", "int4+zstd", "fp16", "bottleneck-2ch", "bottleneck-2ch+zstd"]
    for codec in document["codecs"]:
        assert {"name", "cut", "bytes", "ratio_vs_fp32", "accuracy"} <= codec.keys()
        assert codec["cut"] == "pool2" and 0.0 <= codec["accuracy"] <= 1.0
    bottleneck = document["codecs"][3]
    assert bottleneck["bytes"] == 2 * 5 * 5 and bottleneck["ratio_vs_fp32"] == 1600 / 50
    assert "random weights" in result.stderr
    assert (tmp_path / "cut_codecs.png").stat().st_size > 1000


def test_compress_prints_tables_without_json():
    result = runner.invoke(app, [*TINY, "--bottleneck-channels", "0"])

    assert result.exit_code == 0, result.output
    assert "model variants" in result.stdout and "int8-dynamic" in result.stdout
    assert "ratio vs fp32" in result.stdout and "int4+zstd" in result.stdout


def test_an_unknown_cut_exits_2_naming_it():
    result = runner.invoke(app, [*TINY, "--cut", "nope"])

    assert result.exit_code == 2
    assert "nope" in result.output


def test_a_run_directory_is_measured_with_its_trained_backbone(tmp_path):
    run = tmp_path / "run"
    trained = runner.invoke(
        app, ["train", "zoo:lenet", "--exits", "pool1", "--epochs", "1", "--out", str(run)]
    )
    result = runner.invoke(app, ["compress", f"run:{run}", *TINY[2:], "--json"])

    assert trained.exit_code == 0, trained.output
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["trained_here"] is False
    assert "random weights" not in result.stderr
