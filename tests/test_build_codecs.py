"""Measure → plan → build with codecs: the planner's codecs reach the manifest and the wire."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import tierflow.cli.commands_plan  # noqa: F401  (registers the command, as main() does)
from test_runtime_codecs import infer, link_of
from tierflow.artifacts import Manifest, build, load_manifest
from tierflow.cli.app import app
from tierflow.cli.commands_plan import DEFAULT_CODEC_DROP_PP
from tierflow.compress.finetune import finetune
from tierflow.data import load_dataset
from tierflow.errors import ArtifactError
from tierflow.graph import capture
from tierflow.models import resolve_model
from tierflow.plan import plan as make_plan
from tierflow.plan.codec_options import CodecCandidate, CodecOptions
from tierflow.plan.plan import Plan
from tierflow.plan.variant_planner import plan_with_codecs
from tierflow.topology import Topology, topology_from_dict

runner = CliRunner()
# Two tiers named as test_runtime_codecs's loopback helpers expect; a slow link.
TOPOLOGY = {
    "tiers": [
        {"name": "device", "kind": "device", "compute": {"speed": 0.5}},
        {"name": "cloud", "kind": "cloud", "compute": {"speed": 4.0}},
    ],
    "links": [{"from": "device", "to": "cloud", "bandwidth_mbps": 1.0, "rtt_ms": 20}],
}
# Everything up to pool2 on the device, the classifier in the cloud: pool2 alone crosses,
# whatever the host's timings, and the bytes objective then prefers the smallest codec
# within the budget.
PINS = {"pool2": "device", "flatten": "cloud"}
OPTIONS = CodecOptions(
    (
        CodecCandidate("pool2", "int8+zstd", 0.3, 0.05, 0.04, 0.1),
        CodecCandidate("pool2", "topk:1", 0.01, 0.02, 0.02, 50.0),
    )
)


@pytest.fixture(scope="module")
def topology() -> Topology:
    return topology_from_dict(TOPOLOGY)


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """zoo:lenet after one epoch on 2000 digits, so its argmax means something."""
    net, inputs = resolve_model("zoo:lenet")
    train = load_dataset("mnist5k").train
    subset = train.subset(np.arange(2000, dtype=np.int64), "train[:2000]")
    return finetune(net, subset, epochs=1, lr=2e-3).eval(), inputs


@pytest.fixture(scope="module")
def codec_plan(trained: tuple[nn.Module, tuple[torch.Tensor, ...]], topology: Topology) -> Plan:
    net, inputs = trained
    return plan_with_codecs(capture(net, inputs), topology, OPTIONS, objective="bytes", pins=PINS)


@pytest.fixture(scope="module")
def built(
    trained: tuple[nn.Module, tuple[torch.Tensor, ...]],
    codec_plan: Plan,
    tmp_path_factory: pytest.TempPathFactory,
) -> Manifest:
    net, inputs = trained
    # ONNX segments carry the trained weights (the PyTorch executor re-resolves the spec).
    return build(net, codec_plan, inputs, tmp_path_factory.mktemp("codecs"), executor="onnx")


# -- build -----------------------------------------------------------------------------
def test_the_planner_chooses_the_codec_within_the_budget(codec_plan: Plan) -> None:
    assert dict(codec_plan.link_codecs) == {"device": {"pool2": "int8+zstd"}}
    assert codec_plan.codec_accuracy_drop_pp == pytest.approx(0.1)


def test_the_manifest_carries_the_plans_link_codecs(built: Manifest, codec_plan: Plan) -> None:
    reread = load_manifest(built.root)

    assert built.link_codecs == codec_plan.link_codecs
    assert reread.link_codecs == codec_plan.link_codecs
    assert reread.load_plan().link_codecs == codec_plan.link_codecs


def test_a_loopback_run_of_the_build_compresses_the_cut_and_keeps_the_argmax(
    built: Manifest, trained: tuple[nn.Module, tuple[torch.Tensor, ...]]
) -> None:
    net, _ = trained
    digits = np.ascontiguousarray(load_dataset("mnist5k").test.x[:32], dtype=np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(digits)).argmax(dim=1).numpy()

    result = infer(built, digits)

    assert link_of(result).codecs == {"pool2": "int8+zstd"}
    np.testing.assert_array_equal(result.output.argmax(axis=1), expected)


def test_a_plan_without_codecs_builds_a_manifest_without_the_section(
    trained: tuple[nn.Module, tuple[torch.Tensor, ...]], topology: Topology, tmp_path: Path
) -> None:
    net, inputs = trained
    plain = make_plan(capture(net, inputs), topology, objective="bytes", pins=PINS)

    manifest = build(net, plain, inputs, tmp_path)

    assert manifest.link_codecs == {}
    assert "link_codecs" not in json.loads((tmp_path / "manifest.json").read_text())


def test_a_codec_for_a_value_the_model_does_not_have_is_refused_naming_it(
    trained: tuple[nn.Module, tuple[torch.Tensor, ...]], codec_plan: Plan, tmp_path: Path
) -> None:
    net, inputs = trained
    wrong = dataclasses.replace(codec_plan, link_codecs={"device": {"nope": "int8"}})

    with pytest.raises(ArtifactError, match=r"link_codecs\.device\.nope"):
        build(net, wrong, inputs, tmp_path)


# -- tierflow plan --codecs ------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plan-codecs")
    (root / "topology.yaml").write_text(json.dumps(TOPOLOGY))  # JSON is YAML
    OPTIONS.save(root / "codecs.json")
    return {"topology": root / "topology.yaml", "codecs": root / "codecs.json"}


def said(output: str) -> str:
    """``output`` with rich's error box and line wrapping taken out."""
    return " ".join(output.replace("│", " ").split())


def plan_cli(files: dict[str, Path], *extra: str) -> list[str]:
    pins = [arg for node, tier in PINS.items() for arg in ("--pin", f"{node}={tier}")]
    return [
        "plan", "zoo:lenet", "--topology", str(files["topology"]),
        "--codecs", str(files["codecs"]), "--objective", "bytes", "--runs", "1", *pins, *extra,
    ]  # fmt: skip


def test_plan_codecs_json_records_the_chosen_codec_and_drop(files: dict[str, Path]) -> None:
    result = runner.invoke(app, [*plan_cli(files), "--json"])

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["link_codecs"] == {"device": {"pool2": "int8+zstd"}}
    assert document["codec_accuracy_drop_pp"] == pytest.approx(0.1)


def test_plan_codecs_shows_the_codec_per_link_and_the_predicted_drop(
    files: dict[str, Path],
) -> None:
    result = runner.invoke(app, plan_cli(files, "--max-accuracy-drop", "60"))

    assert result.exit_code == 0, result.output
    assert "activation codecs per link" in result.stdout
    assert "device->cloud" in result.stdout and "topk:1" in result.stdout
    assert "predicted accuracy drop from codecs: 50.00 pp (budget 60 pp)" in result.stdout


def test_a_budget_below_every_candidates_drop_plans_raw_bytes(files: dict[str, Path]) -> None:
    result = runner.invoke(app, [*plan_cli(files, "--max-accuracy-drop", "0.05"), "--json"])

    assert result.exit_code == 0, result.output
    assert "link_codecs" not in json.loads(result.stdout)


def test_codecs_together_with_exits_are_refused(files: dict[str, Path]) -> None:
    result = runner.invoke(app, plan_cli(files, "--exits", str(files["codecs"])))

    assert result.exit_code == 2
    assert "--codecs and --variants cannot be combined with --exits" in said(result.output)


def test_max_accuracy_drop_alone_still_asks_for_exits_or_codecs(files: dict[str, Path]) -> None:
    args = ["plan", "zoo:lenet", "--topology", str(files["topology"]), "--max-accuracy-drop", "1"]

    result = runner.invoke(app, args)

    assert result.exit_code == 2
    assert "needs --exits, --codecs or --variants" in said(result.output)


def test_the_cli_default_budget_is_the_planners() -> None:
    default = inspect.signature(plan_with_codecs).parameters["max_accuracy_drop_pp"].default

    assert default == DEFAULT_CODEC_DROP_PP
