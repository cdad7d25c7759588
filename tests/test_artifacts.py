"""Built artifacts: chained ONNX / PyTorch executors equal the unsplit model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

# Importing the command modules registers `plan` and `build` on the app, as main() does.
import tierflow.cli.commands_build
import tierflow.cli.commands_plan  # noqa: F401
from tierflow import capture, resolve_model
from tierflow.artifacts import Manifest, build, load_executors, load_manifest, run_chain
from tierflow.cli.app import app
from tierflow.errors import ArtifactError
from tierflow.partition.from_plan import expand_assignment
from tierflow.plan.evaluate import Prediction
from tierflow.plan.plan import Plan

ROOT = Path(__file__).parent.parent
TIERS = ("device", "edge", "cloud")
runner = CliRunner()


def plan_by_position(spec: str, model, inputs, fractions=(1 / 3, 2 / 3)) -> Plan:
    """A plan cutting the graph (in topological order) at the given fractions."""
    graph = capture(model, inputs)
    names = [node.name for node in graph.nodes]
    tiers = {
        name: TIERS[sum(i >= f * len(names) for f in fractions)] for i, name in enumerate(names)
    }
    return Plan(
        model=spec,
        objective="manual",
        tiers=TIERS,
        assignment=expand_assignment(graph, tiers),
        cuts=(),
        predicted=Prediction(0.0, None, {}, 0.0, {}, {}),
        baselines={},
    )


def chained(out: Path, *inputs: torch.Tensor) -> np.ndarray:
    manifest = load_manifest(out)
    outputs = run_chain(load_executors(manifest), {"x": inputs[0].numpy()})
    (value,) = outputs.values()
    return value


@pytest.mark.parametrize("name", ["lenet", "resnet_mini", "inception_mini", "transformer", "gru"])
def test_chained_onnx_segments_equal_the_model(name, tmp_path):
    model, inputs = resolve_model(f"zoo:{name}")
    plan = plan_by_position(f"zoo:{name}", model, inputs)

    manifest = build(model, plan, inputs, tmp_path, executor="onnx")

    assert len(manifest.segments) == 3
    assert {s.executor for s in manifest.segments} == {"onnx"}
    np.testing.assert_allclose(
        chained(tmp_path, *inputs), model(*inputs).detach().numpy(), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("executor", ["onnx", "torch"])
@pytest.mark.parametrize("fractions", [(0.1, 0.5), (0.2, 0.8), (0.4, 0.6)])
def test_ints_crossing_tiers_stay_dynamic_at_batch_three(fractions, executor, tmp_path):
    model, inputs = resolve_model("zoo:transformer")
    plan = plan_by_position("zoo:transformer", model, inputs, fractions)
    manifest = build(model, plan, inputs, tmp_path, executor=executor)
    x3 = torch.randn(3, *inputs[0].shape[1:])

    got = chained(tmp_path, x3)

    crossing = {v.kind for s in manifest.segments for v in s.inputs}
    assert crossing & {"int", "ints"}, "the cut should carry Python ints"
    np.testing.assert_allclose(got, model(x3).detach().numpy(), rtol=1e-4, atol=1e-4)


def test_a_batch_of_three_runs_through_onnx_segments(tmp_path):
    model, inputs = resolve_model("zoo:resnet_mini")
    manifest = build(model, plan_by_position("zoo:resnet_mini", model, inputs), inputs, tmp_path)
    x3 = torch.randn(3, 3, 32, 32)

    got = chained(tmp_path, x3)

    assert manifest.segments[0].inputs[0].shape == (-1, 3, 32, 32)
    np.testing.assert_allclose(got, model(x3).detach().numpy(), rtol=1e-4, atol=1e-4)


def test_torch_executor_segments_equal_the_model(tmp_path):
    model, inputs = resolve_model("zoo:transformer")
    plan = plan_by_position("zoo:transformer", model, inputs, (0.2, 0.8))

    manifest = build(model, plan, inputs, tmp_path, executor="torch")

    assert {s.executor for s in manifest.segments} == {"torch"}
    assert not list(tmp_path.glob("*.onnx"))
    np.testing.assert_allclose(
        chained(tmp_path, *inputs), model(*inputs).detach().numpy(), rtol=1e-5, atol=1e-5
    )


def test_torch_executor_loads_the_built_weights_not_fresh_ones(tmp_path):
    model, inputs = resolve_model("zoo:lenet")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(0.5)  # differs from what resolve_model("zoo:lenet") gives
    build(model, plan_by_position("zoo:lenet", model, inputs), inputs, tmp_path, executor="torch")

    np.testing.assert_allclose(
        chained(tmp_path, *inputs), model(*inputs).detach().numpy(), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("executor, suffix", [("onnx", ".onnx"), ("torch", ".safetensors")])
def test_a_tampered_file_is_refused_naming_it(executor, suffix, tmp_path):
    model, inputs = resolve_model("zoo:lenet")
    build(model, plan_by_position("zoo:lenet", model, inputs), inputs, tmp_path, executor=executor)
    victim = tmp_path / f"edge{suffix}"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))

    with pytest.raises(ArtifactError, match=r"edge\.(onnx|safetensors) has sha256 [0-9a-f]{64}"):
        load_executors(load_manifest(tmp_path))


def test_a_tampered_plan_is_refused_by_the_torch_executor(tmp_path):
    model, inputs = resolve_model("zoo:lenet")
    build(model, plan_by_position("zoo:lenet", model, inputs), inputs, tmp_path, executor="torch")
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan_file.read_text().replace('"manual"', '"latency"'))

    with pytest.raises(ArtifactError, match=r"plan\.json has sha256"):
        load_executors(load_manifest(tmp_path), "cloud")


def test_manifest_json_round_trips(tmp_path):
    model, inputs = resolve_model("zoo:inception_mini")
    manifest = build(model, plan_by_position("zoo:inception_mini", model, inputs), inputs, tmp_path)

    data = json.loads((tmp_path / "manifest.json").read_text())
    again = Manifest.from_dict(data, root=tmp_path, source="test")

    assert again == manifest == load_manifest(tmp_path)
    assert data["tierflow_manifest_version"] == 1
    assert data["model"] == "zoo:inception_mini"
    assert len(data["plan_sha256"]) == 64
    segment = data["segments"][0]
    assert segment["tier"] == "device" and segment["executor"] == "onnx"
    assert segment["files"][0]["path"] == "device.onnx" and len(segment["files"][0]["sha256"]) == 64
    assert segment["inputs"][0] == {"name": "x", "shape": [-1, 3, 32, 32], "dtype": "float32",
                                    "kind": "tensor"}  # fmt: skip


def test_a_tuple_crossing_tiers_is_refused_naming_it(tmp_path):
    model, inputs = resolve_model("zoo:gru")
    graph = capture(model, inputs)
    names = [n.name for n in graph.nodes]
    cut = names.index("rnn") + 1  # the GRU's (output, h_n) tuple crosses the cut
    assignment = {n: "device" if i < cut else "cloud" for i, n in enumerate(names)}
    plan = Plan(
        model="zoo:gru", objective="manual", tiers=TIERS,
        assignment=expand_assignment(graph, assignment), cuts=(),
        predicted=Prediction(0.0, None, {}, 0.0, {}, {}), baselines={},
    )  # fmt: skip

    with pytest.raises(ArtifactError, match=r"'rnn'.*tuple"):
        build(model, plan, inputs, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "googlenet"])
def test_torchvision_models_build_and_chain_to_the_model(name, tmp_path):
    model, inputs = resolve_model(f"torchvision:{name}")
    plan = plan_by_position(f"torchvision:{name}", model, inputs)

    manifest = build(model, plan, inputs, tmp_path)

    assert [s.executor for s in manifest.segments] == ["onnx"] * 3
    np.testing.assert_allclose(
        chained(tmp_path, *inputs), model(*inputs).detach().numpy(), rtol=1e-4, atol=1e-4
    )


def test_auto_falls_back_to_torch_where_onnx_export_fails(tmp_path, monkeypatch):
    model, inputs = resolve_model("zoo:lenet")
    plan = plan_by_position("zoo:lenet", model, inputs)

    def refuse(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    manifest = build(model, plan, inputs, tmp_path, executor="auto")

    assert {s.executor for s in manifest.segments} == {"torch"}
    np.testing.assert_allclose(
        chained(tmp_path, *inputs), model(*inputs).detach().numpy(), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ArtifactError, match=r"tier 'device' cannot be exported to ONNX"):
        build(model, plan, inputs, tmp_path / "onnx", executor="onnx")


def test_cli_builds_a_real_plan_and_prints_its_segments(tmp_path):
    plan_file = tmp_path / "plan.json"
    planned = runner.invoke(app, [
        "plan", "zoo:resnet_mini", "--topology",
        str(ROOT / "examples" / "topologies" / "phone-edge-cloud-lte.yaml"),
        "--pin", "fc=cloud", "--runs", "1", "--out", str(plan_file),
    ])  # fmt: skip
    assert planned.exit_code == 0, planned.output

    result = runner.invoke(app, ["build", str(plan_file), "--out", str(tmp_path / "art")])

    assert result.exit_code == 0, result.output
    manifest = load_manifest(tmp_path / "art")
    assert len(manifest.segments) >= 2
    for segment in manifest.segments:
        assert segment.tier in result.stdout
    model, inputs = resolve_model("zoo:resnet_mini")
    np.testing.assert_allclose(
        chained(tmp_path / "art", *inputs), model(*inputs).detach().numpy(), rtol=1e-4, atol=1e-4
    )


def test_cli_build_rejects_an_unknown_executor(tmp_path):
    model, inputs = resolve_model("zoo:lenet")
    plan_by_position("zoo:lenet", model, inputs).save(tmp_path / "plan.json")

    result = runner.invoke(
        app, ["build", str(tmp_path / "plan.json"), "--out", str(tmp_path), "--executor", "tvm"]
    )

    assert result.exit_code == 2
    assert "--executor 'tvm'" in result.output


@pytest.mark.parametrize("executor", ["onnx", "torch"])
def test_a_model_input_passed_up_unchanged_reaches_the_next_tier(executor, tmp_path):
    model, inputs = resolve_model("zoo:resnet_mini")
    plan = plan_by_position("zoo:resnet_mini", model, inputs, (1e-9, 0.5))  # device: only x
    manifest = build(model, plan, inputs, tmp_path, executor=executor)
    x3 = torch.randn(3, 3, 32, 32)

    got = chained(tmp_path, x3)

    assert [v.name for v in manifest.segments[0].outputs] == ["x"]
    np.testing.assert_allclose(got, model(x3).detach().numpy(), rtol=1e-4, atol=1e-4)
