"""Model compression per segment: pruning, recovery fine-tuning, int8/fp16 ONNX variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from tierflow.compress.finetune import accuracy, finetune
from tierflow.compress.onnx_measure import export_onnx, onnx_accuracy, ort_session
from tierflow.compress.prune import channel_counts, prune_channels
from tierflow.compress.quantize import quantize_onnx
from tierflow.compress.variants import compress_variants
from tierflow.data import DatasetSplits, load_dataset
from tierflow.errors import CompressionError
from tierflow.models import resolve_model


@pytest.fixture(scope="module")
def splits() -> DatasetSplits:
    return load_dataset("mnist5k")


@pytest.fixture(scope="module")
def trained_lenet(splits: DatasetSplits) -> nn.Module:
    net, _ = resolve_model("zoo:lenet")
    return finetune(net, splits.train, epochs=5, lr=2e-3)


@pytest.fixture(scope="module")
def lenet_onnx(trained_lenet: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lenet")
    return export_onnx(trained_lenet, torch.zeros(1, 1, 28, 28), out / "fp32.onnx")


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort_session(path, threads=1)
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


def test_pruning_removes_half_the_channels_and_keeps_the_output_shape() -> None:
    net, (x,) = resolve_model("zoo:lenet")

    pruned = prune_channels(net, x, 0.5)

    assert channel_counts(pruned) == {"conv1": 3, "conv2": 8, "fc1": 60, "fc2": 42, "fc3": 10}
    assert pruned(torch.zeros(4, 1, 28, 28)).shape == (4, 10)


def test_pruning_leaves_the_users_model_untouched() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 3)
    ).train()  # train mode: a forward pass would move the BatchNorm statistics
    before = {k: v.clone() for k, v in net.state_dict().items()}

    prune_channels(net, torch.randn(2, 1, 8, 8), 0.5)

    after = net.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, msg=key)
    assert net.training


def test_pruning_rejects_a_ratio_outside_zero_to_one() -> None:
    net, (x,) = resolve_model("zoo:lenet")

    with pytest.raises(CompressionError, match="ratio"):
        prune_channels(net, x, 1.0)


def test_pruned_lenet_recovers_its_accuracy_after_finetuning(
    trained_lenet: nn.Module, splits: DatasetSplits
) -> None:
    base = accuracy(trained_lenet, splits.test)
    pruned = prune_channels(trained_lenet, torch.zeros(1, 1, 28, 28), 0.5)

    recovered = finetune(pruned, splits.train, epochs=2, lr=2e-3)

    assert base >= 0.9
    assert accuracy(recovered, splits.test) >= base - 0.02


def test_static_int8_agrees_with_fp32_and_keeps_accuracy(
    lenet_onnx: Path, splits: DatasetSplits, tmp_path: Path
) -> None:
    int8 = quantize_onnx(
        lenet_onnx, tmp_path / "int8.onnx", mode="static", calibration=splits.train.x[:256]
    )

    x = splits.test.x[:200]
    fp32_logits, int8_logits = _run(lenet_onnx, x), _run(int8, x)
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # int8 steps are ~1/127 of each tensor's range: logits move by a few percent of theirs.
    assert np.abs(int8_logits - fp32_logits).max() <= 0.1 * np.abs(fp32_logits).max()
    assert np.mean(int8_logits.argmax(1) == fp32_logits.argmax(1)) >= 0.97
    assert onnx_accuracy(int8, splits.test) >= onnx_accuracy(lenet_onnx, splits.test) - 0.01


def test_dynamic_int8_quantises_the_linear_layers(
    lenet_onnx: Path, splits: DatasetSplits, tmp_path: Path
) -> None:
    int8 = quantize_onnx(lenet_onnx, tmp_path / "dyn.onnx", mode="dynamic")

    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert "MatMulInteger" in ops and "Gemm" not in ops
    x = splits.test.x[:200]
    agree = np.mean(_run(int8, x).argmax(1) == _run(lenet_onnx, x).argmax(1))
    assert agree >= 0.97


def test_fp16_halves_the_file_and_keeps_float32_io(lenet_onnx: Path, tmp_path: Path) -> None:
    half = quantize_onnx(lenet_onnx, tmp_path / "fp16.onnx", mode="fp16")

    x = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)
    assert half.stat().st_size < 0.6 * lenet_onnx.stat().st_size
    np.testing.assert_allclose(_run(half, x), _run(lenet_onnx, x), atol=0.05, rtol=0.01)


def test_quantising_a_model_without_weight_ops_raises(tmp_path: Path) -> None:
    path = export_onnx(nn.ReLU(), torch.zeros(1, 4), tmp_path / "relu.onnx")

    with pytest.raises(CompressionError, match=r"relu\.onnx has no op"):
        quantize_onnx(path, tmp_path / "q.onnx", calibration=np.zeros((4, 4), np.float32))


def test_calibration_of_the_wrong_shape_raises_naming_the_input(
    lenet_onnx: Path, tmp_path: Path
) -> None:
    wrong = np.zeros((8, 1, 32, 32), np.float32)

    with pytest.raises(CompressionError, match=r"input 'x' has shape \[8, 1, 32, 32\]"):
        quantize_onnx(lenet_onnx, tmp_path / "q.onnx", calibration=wrong)


def test_static_quantisation_without_calibration_raises_naming_the_input(
    lenet_onnx: Path, tmp_path: Path
) -> None:
    with pytest.raises(CompressionError, match=r"calibration data for input\(s\) \['x'\]"):
        quantize_onnx(lenet_onnx, tmp_path / "q.onnx", mode="static")


def test_variants_are_measured_through_onnx_runtime(
    trained_lenet: nn.Module, splits: DatasetSplits, tmp_path: Path
) -> None:
    names = ("fp32", "int8-static", "int8-dynamic", "fp16")

    variants = compress_variants(
        trained_lenet,
        torch.from_numpy(splits.test.x[:1]),
        tmp_path,
        data=splits,
        names=names,
        runs=5,
    )

    by_name = {v.name: v for v in variants}
    assert list(by_name) == list(names)
    assert by_name["fp32"].speedup == 1.0
    assert all(v.latency_ms > 0 and v.path.is_file() for v in variants)
    assert by_name["int8-static"].size_bytes < 0.5 * by_name["fp32"].size_bytes
    fp32_accuracy = by_name["fp32"].accuracy
    assert fp32_accuracy is not None and fp32_accuracy == pytest.approx(
        accuracy(trained_lenet, splits.test), abs=1e-3
    )
    for v in variants:
        assert v.accuracy is not None and v.accuracy >= fp32_accuracy - 0.01, v.name


def test_unknown_variant_names_are_rejected(tmp_path: Path) -> None:
    net, (x,) = resolve_model("zoo:lenet")

    with pytest.raises(CompressionError, match="int4"):
        compress_variants(net, x, tmp_path, names=("int4",))


def test_pruned_variants_are_finetuned_and_keep_accuracy(
    trained_lenet: nn.Module, splits: DatasetSplits, tmp_path: Path
) -> None:
    variants = compress_variants(
        trained_lenet,
        torch.from_numpy(splits.test.x[:1]),
        tmp_path,
        data=splits,
        names=("pruned", "pruned+int8"),
        finetune_epochs=2,
        runs=5,
    )

    by_name = {v.name: v for v in variants}
    assert list(by_name) == ["fp32", "pruned", "pruned+int8"]
    assert by_name["pruned"].size_bytes < 0.35 * by_name["fp32"].size_bytes
    fp32_accuracy = by_name["fp32"].accuracy
    assert fp32_accuracy is not None
    for name in ("pruned", "pruned+int8"):
        got = by_name[name].accuracy
        assert got is not None and got >= fp32_accuracy - 0.02, name
