"""Variant options measured per stretch, and int8 tiers built, loaded and checked."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

# Importing the command modules registers their commands on the app, as main() does.
import tierflow.cli.commands_build
import tierflow.cli.commands_plan  # noqa: F401
from tierflow.artifacts import build, load_manifest
from tierflow.artifacts.executors import load_executors, run_chain
from tierflow.cli.app import app
from tierflow.compress.cut import split_stretch
from tierflow.compress.finetune import accuracy, finetune
from tierflow.compress.variant_options_measure import stretch_ends, variant_options_for
from tierflow.data import load_dataset
from tierflow.data.dataset import DatasetSplits
from tierflow.errors import ArtifactError, CompressionError
from tierflow.graph import capture
from tierflow.models import resolve_model
from tierflow.plan import plan
from tierflow.plan.variant_options import VariantOptions
from tierflow.topology import topology_from_dict

TWO_TIERS = {
    "tiers": [
        {"name": "phone", "kind": "device", "compute": {"speed": 0.25}},
        {"name": "cloud", "kind": "cloud", "compute": {"speed": 4.0}},
    ],
    "links": [{"from": "phone", "to": "cloud", "bandwidth_mbps": 5, "rtt_ms": 20}],
}


@pytest.fixture(scope="module")
def splits() -> DatasetSplits:
    return load_dataset("mnist5k")


@pytest.fixture(scope="module")
def trained(splits: DatasetSplits) -> tuple[nn.Module, torch.Tensor]:
    net, (x,) = resolve_model("zoo:lenet")
    return finetune(net, splits.train, epochs=3, lr=2e-3), x


def test_stretches_chained_equal_the_model(trained):
    net, x = trained
    ends = stretch_ends(net, x)
    assert ends == ["pool1", "fc3"]  # conv2 follows pool1; the output ends the last
    value = x
    start = None
    for end in ends:
        value = split_stretch(net, x, start, end)(value)
        start = end
    torch.testing.assert_close(value, net(x))


def test_a_stretch_must_follow_its_start(trained):
    net, x = trained
    with pytest.raises(CompressionError, match="'conv1' does not follow 'pool1'"):
        split_stretch(net, x, "pool1", "conv1")
    with pytest.raises(CompressionError, match="'conv9' is not a node"):
        split_stretch(net, x, None, "conv9")


def test_variant_options_cover_every_node_of_the_stretches_they_change(trained, splits):
    net, x = trained
    options = variant_options_for(
        net, x, splits, model_spec="zoo:lenet", variants=["int8-static", "int8-dynamic"],
        limit=200, runs=5,
    )  # fmt: skip
    static = options.named("int8-static")
    nodes = [n.name for n in capture(net, (x,)).nodes]
    assert set(static.time_ratio) == set(nodes)  # both stretches have Conv or Gemm
    # int8 weights are a quarter of fp32; the tiny first conv gains nothing (its scales
    # and zero points cost more than its 150 weights save), the linear layers do.
    assert static.size_ratio["fc3"] < 0.5
    assert static.accuracy_drop_pp <= 2.0  # measured on 200 digits, not assumed
    dynamic = options.named("int8-dynamic")
    # Dynamic int8 leaves Conv alone: the conv-only first stretch is not listed.
    assert "conv1" not in dynamic.time_ratio and "fc3" in dynamic.time_ratio
    assert VariantOptions.from_dict(options.to_dict()) == options


def test_variant_options_refuse_unknown_variants_and_data_of_another_shape(trained, splits):
    net, x = trained
    with pytest.raises(CompressionError, match="unknown \\['int2'\\]"):
        variant_options_for(net, x, splits, model_spec="m", variants=["int2"])
    digits = load_dataset("digits")
    with pytest.raises(CompressionError, match="samples of 'digits"):
        variant_options_for(net, x, digits, model_spec="m")


def _int8_phone_plan(net: nn.Module, x: torch.Tensor):
    graph = capture(net, (x,), name="zoo:lenet")
    base = plan(graph, topology_from_dict(TWO_TIERS), pins={"pool2": "phone", "fc1": "cloud"})
    return dataclasses.replace(base, tier_variants={"phone": "int8-static"})


def test_an_int8_tier_is_built_quantised_and_its_accuracy_is_measured(trained, splits, tmp_path):
    net, x = trained
    the_plan = _int8_phone_plan(net, x)
    calibration = torch.from_numpy(splits.train.x[:256])
    manifest = build(net, the_plan, (x,), tmp_path, calibration=(calibration,))

    phone, cloud = manifest.segments
    assert (phone.variant, cloud.variant) == ("int8-static", "fp32")
    assert phone.files[0].path == "phone.int8-static.onnx"
    assert not (tmp_path / "phone.onnx").exists()
    document = json.loads((tmp_path / "manifest.json").read_text())
    assert document["segments"][0]["variant"] == "int8-static"
    assert "variant" not in document["segments"][1]

    loaded = load_manifest(tmp_path / "manifest.json")  # hashes checked
    executors = load_executors(loaded)
    test = splits.test
    logits = run_chain(executors, {"x": test.x})
    (output,) = logits.values()
    built = float(np.mean(np.argmax(output, axis=1) == test.y))
    reference = accuracy(net, test)
    assert abs(built - reference) <= 0.01  # within 1 pp on 1,000 held-out digits
    # ... and it really is a different computation, not the fp32 file renamed.
    fp32 = net(torch.from_numpy(test.x[:64])).detach().numpy()
    assert not np.allclose(output[:64], fp32, atol=1e-5)


def test_static_int8_without_calibration_is_refused_naming_the_tier(trained, tmp_path):
    net, x = trained
    with pytest.raises(
        ArtifactError, match=r"tier_variants\.phone: int8-static: static int8 needs"
    ):
        build(net, _int8_phone_plan(net, x), (x,), tmp_path)


def test_a_torch_segment_cannot_take_a_variant(trained, tmp_path):
    net, x = trained
    with pytest.raises(ArtifactError, match="runs on the PyTorch executor"):
        build(net, _int8_phone_plan(net, x), (x,), tmp_path, executor="torch")


def test_cli_build_asks_for_calibration_data(trained, tmp_path):
    net, x = trained
    the_plan = _int8_phone_plan(net, x)
    the_plan.save(tmp_path / "plan.json")
    runner = CliRunner()
    result = runner.invoke(
        app, ["build", str(tmp_path / "plan.json"), "--out", str(tmp_path / "b")]
    )
    assert result.exit_code != 0
    assert "--calibration-data" in result.output
    result = runner.invoke(
        app,
        ["build", str(tmp_path / "plan.json"), "--out", str(tmp_path / "b"),
         "--calibration-data", "mnist5k", "--calibration-samples", "64"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "int8-static" in result.output
    assert load_manifest(tmp_path / "b" / "manifest.json").segments[0].variant == "int8-static"


def test_a_manifest_with_an_unknown_variant_is_refused(trained, splits, tmp_path):
    net, x = trained
    build(net, _int8_phone_plan(net, x), (x,), tmp_path, calibration=(torch.zeros(8, 1, 28, 28),))
    path = tmp_path / "manifest.json"
    document = json.loads(path.read_text())
    document["segments"][0]["variant"] = "int3"
    path.write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match="unknown variant 'int3'"):
        load_manifest(path)


def test_cli_plan_with_variants_prints_the_choice(trained, tmp_path):
    net, x = trained
    nodes = [n.name for n in capture(net, (x,)).nodes]
    options = {
        "tierflow_variants_version": 1,
        "model": "zoo:lenet",
        "variants": [
            {"name": "int8-static", "accuracy_drop_pp": 0.1,
             "time_ratio": dict.fromkeys(nodes, 0.1), "size_ratio": {}},
        ],
    }  # fmt: skip
    (tmp_path / "variants.json").write_text(json.dumps(options))
    (tmp_path / "topology.json").write_text(json.dumps(TWO_TIERS))
    result = CliRunner().invoke(
        app,
        ["plan", "zoo:lenet", "--topology", str(tmp_path / "topology.json"),
         "--variants", str(tmp_path / "variants.json"), "--max-accuracy-drop", "0.5",
         "--out", str(tmp_path / "plan.json"), "--runs", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "compressed variants:" in result.output
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert saved["tier_variants"]
    assert saved["compression_drop_pp"] == pytest.approx(0.1 * len(saved["tier_variants"]))
