"""Codec options measured on a trained lenet: ratios, times and accuracy drops are real."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import tierflow.cli.commands_compress  # noqa: F401  (registers the command, as main() does)
from tierflow.cli.app import app
from tierflow.compress.codec_options_measure import codec_options_for, default_nodes
from tierflow.compress.finetune import finetune
from tierflow.data import load_dataset
from tierflow.data.dataset import ArrayDataset, DatasetSplits
from tierflow.errors import CompressionError
from tierflow.graph import capture
from tierflow.models import resolve_model
from tierflow.plan.codec_options import CodecOptions
from tierflow.plan.variant_planner import plan_with_codecs
from tierflow.topology import load_topology

ROOT = Path(__file__).parent.parent
LIMIT = 200  # validation digits: 0.5 pp resolution, a few seconds for every node
runner = CliRunner()


@pytest.fixture(scope="module")
def splits() -> DatasetSplits:
    return load_dataset("mnist5k")


@pytest.fixture(scope="module")
def trained(splits: DatasetSplits) -> tuple[nn.Module, torch.Tensor]:
    """zoo:lenet after one epoch on 2000 digits (~70% on validation, well above chance)."""
    net, (x,) = resolve_model("zoo:lenet")
    train = splits.train.subset(np.arange(2000, dtype=np.int64), "train[:2000]")
    return finetune(net, train, epochs=1, lr=2e-3), x


@pytest.fixture(scope="module")
def options(trained: tuple[nn.Module, torch.Tensor], splits: DatasetSplits) -> CodecOptions:
    net, x = trained
    return codec_options_for(
        net, x, splits, codecs=("fp16", "int8+zstd", "raw+zstd", "topk:1"), limit=LIMIT
    )


def by_pair(options: CodecOptions) -> dict[tuple[str, str], float]:
    return {(c.node, c.codec): c.accuracy_drop_pp for c in options.candidates}


def test_every_default_node_is_measured_with_every_codec_in_order(
    options: CodecOptions, trained: tuple[nn.Module, torch.Tensor]
) -> None:
    nodes = default_nodes(*trained)

    assert nodes == ["x", "conv1", "relu", "pool1", "conv2", "relu_1", "pool2"]
    assert [(c.node, c.codec) for c in options.candidates] == [
        (n, c) for n in nodes for c in ("fp16", "int8+zstd", "raw+zstd", "topk:1")
    ]


def test_int8_zstd_shrinks_every_value_and_no_drop_is_negative(options: CodecOptions) -> None:
    int8 = [c for c in options.candidates if c.codec == "int8+zstd"]

    assert all(c.ratio < 0.5 for c in int8), int8
    assert all(c.accuracy_drop_pp >= 0 for c in options.candidates)
    assert all(c.encode_ms > 0 and c.decode_ms > 0 for c in options.candidates)


def test_fp16_ratio_is_half_plus_the_header(options: CodecOptions) -> None:
    pool2 = next(c for c in options.candidates if (c.node, c.codec) == ("pool2", "fp16"))

    # 400 halves of 2 bytes over 400 floats of 4, plus a header of a few tens of bytes.
    assert 0.5 < pool2.ratio < 0.55


def test_a_lossless_codec_costs_no_accuracy(options: CodecOptions) -> None:
    drops = by_pair(options)

    assert all(drops[(node, "raw+zstd")] == 0.0 for node, _ in drops)


def test_a_destructive_codec_shows_a_large_measured_drop(options: CodecOptions) -> None:
    drops = by_pair(options)

    # One surviving element of 400 at pool2 leaves the classifier near chance (~10%).
    assert drops[("pool2", "topk:1")] > 30
    assert drops[("pool2", "int8+zstd")] < 2


def test_the_validation_split_is_what_all_splits_measure(
    trained: tuple[nn.Module, torch.Tensor], splits: DatasetSplits
) -> None:
    net, x = trained

    def drop(data: ArrayDataset | DatasetSplits) -> float:
        options = codec_options_for(net, x, data, nodes=["pool1"], codecs=["topk:1"], limit=50)
        return options.candidates[0].accuracy_drop_pp

    assert drop(splits) == drop(splits.val) != drop(splits.test)


def test_measured_options_round_trip_and_plan_on_the_models_graph(
    options: CodecOptions, trained: tuple[nn.Module, torch.Tensor], tmp_path: Path
) -> None:
    net, x = trained
    path = tmp_path / "codecs.json"
    options.save(path)
    topology = load_topology(ROOT / "examples" / "topologies" / "camera-gateway-cloud.yaml")

    plan = plan_with_codecs(capture(net, (x,)), topology, CodecOptions.load(path))

    assert CodecOptions.load(path) == options
    assert plan.codec_accuracy_drop_pp is not None and plan.codec_accuracy_drop_pp <= 1.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"nodes": ["nope"]}, "nope"),
        ({"codecs": []}, "codecs"),
        ({"limit": 0}, "limit"),
    ],
)
def test_bad_arguments_are_refused_naming_the_field(
    trained: tuple[nn.Module, torch.Tensor], splits: DatasetSplits, kwargs: dict, field: str
) -> None:
    net, x = trained

    with pytest.raises(CompressionError, match=field):
        codec_options_for(net, x, splits, **kwargs)


def test_samples_shaped_unlike_the_model_input_are_refused(
    trained: tuple[nn.Module, torch.Tensor],
) -> None:
    net, x = trained
    wrong = ArrayDataset(np.zeros((4, 3, 8, 8), np.float32), np.zeros(4, np.int64), classes=10)

    with pytest.raises(CompressionError, match=r"data: .*\(3, 8, 8\)"):
        codec_options_for(net, x, wrong)


def test_compress_writes_codec_options_the_planner_reads(tmp_path: Path) -> None:
    path = tmp_path / "out" / "codecs.json"
    args = [
        "compress", "zoo:lenet", "--cut", "pool2", "--variants", "fp32", "--runs", "2",
        "--codecs", "int8+zstd,fp16", "--train-epochs", "1", "--train-limit", "1000",
        "--bottleneck-channels", "0", "--codec-options", str(path),
        "--codec-options-limit", "100", "--json",
    ]  # fmt: skip

    result = runner.invoke(app, args)

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["codec_options"] == str(path)
    options = CodecOptions.load(path)
    assert {c.codec for c in options.candidates} == {"int8+zstd", "fp16"}
    assert {c.node for c in options.candidates} >= {"x", "pool1", "pool2"}


def test_a_request_carries_as_many_samples_as_the_example(
    trained: tuple[nn.Module, torch.Tensor], splits: DatasetSplits
) -> None:
    net, _ = trained
    ratios = {}
    for batch in (1, 8):
        example = torch.zeros(batch, 1, 28, 28)
        options = codec_options_for(
            net, example, splits, nodes=["pool2"], codecs=["int8+zstd"], limit=64
        )
        ratios[batch] = options.candidates[0].ratio
        assert options.batch == batch  # recorded, so a plan at another batch is refused
    # One header (and one zstd frame) per request: shared by 8 samples it weighs less.
    assert ratios[8] < ratios[1]
