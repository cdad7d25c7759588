"""A learned bottleneck saved as ``bottleneck:DIR``: rebuilt exactly, planned, built, served."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import tierflow.cli.commands_compress  # noqa: F401  (registers the command, as main() does)
from test_runtime_codecs import infer
from tierflow.artifacts import build, load_executors, load_manifest, run_chain
from tierflow.cli.app import app
from tierflow.compress.bottleneck import Bottleneck, BottleneckSettings, train_bottleneck
from tierflow.compress.bottleneck_run import WEIGHTS_FILE, save_bottleneck
from tierflow.compress.finetune import finetune
from tierflow.data import load_dataset
from tierflow.data.dataset import DatasetSplits
from tierflow.errors import ModelSpecError
from tierflow.graph import capture
from tierflow.models import resolve_model
from tierflow.plan import plan
from tierflow.topology import topology_from_dict

THIN = {
    "tiers": [
        {"name": "device", "kind": "device", "compute": {"speed": 0.5}},
        {"name": "cloud", "kind": "cloud", "compute": {"speed": 4.0}},
    ],
    "links": [{"from": "device", "to": "cloud", "bandwidth_mbps": 0.5, "rtt_ms": 20}],
}


@pytest.fixture(scope="module")
def splits() -> DatasetSplits:
    return load_dataset("mnist5k")


@pytest.fixture(scope="module")
def bottleneck(splits: DatasetSplits) -> tuple[Bottleneck, torch.Tensor]:
    net, (x,) = resolve_model("zoo:lenet")
    train = splits.train.subset(np.arange(2000, dtype=np.int64), "train[:2000]")
    net = finetune(net, train, epochs=1, lr=2e-3)
    settings = BottleneckSettings(code_channels=4, epochs=1)
    return train_bottleneck(net, x, "pool2", train, settings), x


@pytest.fixture(scope="module")
def saved(bottleneck, tmp_path_factory) -> str:
    model, x = bottleneck
    folder = tmp_path_factory.mktemp("bn")
    save_bottleneck(model, folder, base="zoo:lenet", example=x, dataset="mnist5k")
    return f"bottleneck:{folder}"


def _logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_a_saved_bottleneck_rebuilds_exactly(bottleneck, saved, splits):
    model, _ = bottleneck
    rebuilt, (example,) = resolve_model(saved)
    assert tuple(example.shape) == (1, 1, 28, 28)
    x = splits.test.x[:64]
    np.testing.assert_array_equal(_logits(rebuilt, x), _logits(model, x))


def test_tampered_bottleneck_weights_are_refused(bottleneck, tmp_path):
    model, x = bottleneck
    save_bottleneck(model, tmp_path, base="zoo:lenet", example=x)
    weights = tmp_path / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelSpecError, match="sha256"):
        resolve_model(f"bottleneck:{tmp_path}")


def test_the_planner_sends_the_code_on_a_thin_link_and_the_built_split_is_exact(
    saved, splits, tmp_path
):
    model, (x,) = resolve_model(saved)
    graph = capture(model, (x,), name=saved)
    code = next(n for n in graph.nodes if n.name == "to")  # the uint8 code, 1 B per element
    the_plan = plan(
        graph,
        topology_from_dict(THIN),
        pins={"head_lower_segment_graph_module_conv1": "device", "tail_decoder_expand": "cloud"},
    )
    ((cut,),) = [c.tensors for c in the_plan.cuts]
    assert cut == "to" and the_plan.cuts[0].bytes == code.output_bytes == 4 * 5 * 5
    manifest = build(model, the_plan, (x,), tmp_path)
    executors = load_executors(load_manifest(tmp_path / "manifest.json"))
    test = splits.test.x[:200]
    (built,) = run_chain(executors, {"x": test}).values()
    np.testing.assert_allclose(built, _logits(model, test), rtol=1e-4, atol=1e-4)
    # ... and over real gRPC tiers, the code crossing as UINT8 bytes.
    served = infer(manifest, test[:8])
    np.testing.assert_allclose(served.output, built[:8], rtol=1e-5, atol=1e-5)
    (hop,) = served.trace.links
    assert hop.request_bytes < test[:8].nbytes / 20


def test_cli_bottleneck_out_needs_a_bottleneck(tmp_path):
    result = CliRunner().invoke(
        app,
        ["compress", "zoo:lenet", "--bottleneck-channels", "0", "--bottleneck-out", str(tmp_path)],
    )
    assert result.exit_code != 0
    assert "--bottleneck-channels" in result.output


def test_the_bench_measures_a_bottleneck_models_accuracy_on_its_own_dataset(saved):
    from tierflow.cli.model_bench import compression_inputs

    inputs = compression_inputs(
        saved, codecs=None, variants=None, data=None, samples=10, max_accuracy_drop_pp=0.5
    )
    assert inputs["compression"] is None
    assert inputs["labelled"].x.shape == (10, 1, 28, 28)  # mnist5k, recorded when saved
