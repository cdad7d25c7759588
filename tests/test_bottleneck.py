"""The learned bottleneck at a cut: exported halves, uint8 codes, measured accuracy."""

from __future__ import annotations

import copy

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tierflow.compress import (
    BottleneckSettings,
    measure_bottleneck,
    measure_cut_codecs,
    split_at,
    train_bottleneck,
)
from tierflow.compress.cut_measure import export_bottleneck
from tierflow.compress.finetune import finetune
from tierflow.data import load_dataset
from tierflow.errors import CompressionError
from tierflow.models import resolve_model


@pytest.fixture(scope="module")
def trained():
    """zoo:lenet trained briefly, a 4-channel bottleneck at pool2 and the data (~3 s)."""
    splits = load_dataset("mnist5k")
    net, (x,) = resolve_model("zoo:lenet")
    net = finetune(net, splits.train, epochs=2, lr=2e-3)
    settings = BottleneckSettings(code_channels=4, epochs=2)
    bottleneck = train_bottleneck(net, x, "pool2", splits.train, settings)
    return net, x, splits, bottleneck


def test_split_at_a_cut_computes_the_original_model():
    net, (x,) = resolve_model("zoo:lenet_large")

    parts = split_at(net, x, "pool1")

    torch.testing.assert_close(parts.upper(parts.lower(x)), net(x))
    assert parts.fp32_bytes_per_sample == 4 * 32 * 14 * 14


def test_a_cut_with_a_skip_around_it_is_refused_naming_the_node():
    net, (x,) = resolve_model("zoo:resnet_mini")

    with pytest.raises(CompressionError, match="stages_0_body_0_conv"):
        split_at(net, x, "stages_0_body_0_conv")


def test_onnx_head_and_tail_equal_the_pytorch_bottleneck(trained, tmp_path):
    _, x, splits, bottleneck = trained
    batch = torch.from_numpy(splits.test.x[:64])

    head_path, tail_path = export_bottleneck(bottleneck, x, tmp_path)
    head = ort.InferenceSession(str(head_path), providers=["CPUExecutionProvider"])
    tail = ort.InferenceSession(str(tail_path), providers=["CPUExecutionProvider"])
    code = head.run(None, {"x": batch.numpy()})[0]
    logits = tail.run(None, {"code": code})[0]

    with torch.no_grad():
        expected_code = bottleneck.head(batch).numpy()
        expected_logits = bottleneck.tail(torch.from_numpy(code)).numpy()
    # Rounding can land one level apart when float32 sums differ in the last bit.
    assert np.abs(code.astype(np.int16) - expected_code.astype(np.int16)).max() <= 1
    assert np.mean(code == expected_code) > 0.999
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-4)


def test_the_code_that_crosses_is_uint8_and_its_size_is_what_is_reported(trained, tmp_path):
    _, x, splits, bottleneck = trained

    rows = measure_bottleneck(bottleneck, x, splits.test, tmp_path)
    head = ort.InferenceSession(str(tmp_path / "head.onnx"), providers=["CPUExecutionProvider"])
    code = head.run(None, {"x": splits.test.x[:8]})[0]

    assert code.dtype == np.uint8 and code.shape == (8, 4, 5, 5)
    assert rows[0].name == "bottleneck-4ch"
    assert rows[0].bytes_per_sample == code[0].nbytes == 100
    assert rows[0].ratio_vs_fp32 == pytest.approx(1600 / 100)
    assert rows[1].name == "bottleneck-4ch+zstd" and rows[1].bytes_per_sample > 0


def test_bottleneck_accuracy_is_measured_so_a_broken_decoder_scores_at_chance(trained, tmp_path):
    _, x, splits, bottleneck = trained
    broken = copy.deepcopy(bottleneck)
    with torch.no_grad():
        broken.tail.decoder.conv.weight.zero_()
        broken.tail.decoder.conv.bias.zero_()

    good = measure_bottleneck(bottleneck, x, splits.test, tmp_path / "good")[0]
    bad = measure_bottleneck(broken, x, splits.test, tmp_path / "bad")[0]

    assert good.accuracy > 0.8
    assert bad.accuracy < 0.3  # every input gives the same logits: one class wins


def test_bottleneck_loses_little_accuracy_against_the_original_model(trained, tmp_path):
    net, x, splits, bottleneck = trained

    fp32 = measure_cut_codecs(split_at(net, x, "pool2"), x, splits.test, tmp_path, codecs=[])[0]
    code = measure_bottleneck(bottleneck, x, splits.test, tmp_path)[0]

    assert fp32.name == "fp32" and fp32.ratio_vs_fp32 == 1.0
    assert code.accuracy >= fp32.accuracy - 0.05  # lenet, 2+2 epochs: measured -0.x pp


def test_codec_accuracy_comes_from_decoded_activations(trained, tmp_path):
    net, x, splits, _ = trained
    parts = split_at(net, x, "pool2")

    rows = measure_cut_codecs(parts, x, splits.test, tmp_path, codecs=["int8+zstd", "topk:1"])
    by_name = {r.name: r for r in rows}

    assert by_name["int8+zstd"].accuracy == pytest.approx(by_name["fp32"].accuracy, abs=0.01)
    assert by_name["topk:1"].accuracy < by_name["fp32"].accuracy - 0.2  # one value of 400 kept
    assert by_name["int8+zstd"].ratio_vs_fp32 > 1.5


def test_bad_settings_name_the_field():
    net, (x,) = resolve_model("zoo:lenet")
    train = load_dataset("mnist5k").train

    with pytest.raises(CompressionError, match="code_channels"):
        train_bottleneck(net, x, "pool2", train, BottleneckSettings(code_channels=0))
