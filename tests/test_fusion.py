"""DDNN-style multi-device fusion: the runtime over real loopback sockets equals the model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tierflow.data import load_dataset, quadrant_views
from tierflow.errors import FusionError, ServiceError
from tierflow.fusion import (
    DeviceService,
    FusionBundle,
    FusionClient,
    FusionServer,
    ModelSettings,
    TrainSettings,
    deploy,
    export_bundle,
    fuse,
    load_bundle,
    train_cloud_only,
    train_fusion,
)
from tierflow.fusion.protocol import FUSION_DEVICE, FUSION_ID, FUSION_TRACE, FusionTrace
from tierflow.fusion.services import MODEL
from tierflow.runtime import serde
from tierflow.runtime._proto import grpc_predict_v2_pb2 as pb
from tierflow.runtime.wire import InferRequest, InferResponse

NEVER = 2.0  # above any confidence in [0, 1]: every sample goes to the cloud
ALWAYS = 0.0  # every sample exits at the edge


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> FusionBundle:
    """A small fusion bundle: one short epoch on part of MNIST-5k, concat fusion."""
    splits = load_dataset("mnist5k")
    train = splits.train.subset(np.arange(600), "train600")
    settings = TrainSettings(epochs=1, batch_size=64)
    model = train_fusion(train, mode="concat", feature_dim=8, edge_dim=8, settings=settings)
    reference = train_cloud_only(train, settings=settings)
    root = tmp_path_factory.mktemp("fusion")
    export_bundle(model, reference, root, exit_policy="entropy", exit_threshold=0.5)
    return load_bundle(root)


@pytest.fixture(scope="module")
def views() -> list[np.ndarray]:
    return quadrant_views(load_dataset("mnist5k").test.x[:6])


def torch_logits(bundle: FusionBundle, views: list[np.ndarray], mask: list[float]):
    model = bundle.load_model()
    with torch.no_grad():
        return model(torch.from_numpy(np.stack(views)), torch.tensor(mask))


@pytest.mark.parametrize(("threshold", "exit_tier"), [(ALWAYS, "edge"), (NEVER, "cloud")])
def test_fused_runtime_output_equals_the_pytorch_model(
    bundle: FusionBundle, views: list[np.ndarray], threshold: float, exit_tier: str
) -> None:
    edge, cloud = torch_logits(bundle, views, [1.0] * 4)
    expected = edge if exit_tier == "edge" else cloud

    with (
        deploy(bundle, exit_threshold=threshold) as running,
        FusionClient(running.device_addresses) as client,
    ):
        result = client.infer(views)

    torch.testing.assert_close(torch.from_numpy(result.logits), expected, atol=1e-4, rtol=1e-4)
    assert result.trace.exits == (exit_tier,) * 6
    assert result.trace.fused == (0, 1, 2, 3) and result.trace.missing == ()
    assert result.errors == {}


def test_every_device_returns_the_same_result(
    bundle: FusionBundle, views: list[np.ndarray]
) -> None:
    with deploy(bundle) as running:
        replies = _call_devices_directly(running.device_addresses, views, "same-id")

    logits = [r[0] for r in replies]
    traces = [r[1] for r in replies]
    for other in logits[1:]:
        np.testing.assert_array_equal(other, logits[0])
    assert all(t == traces[0] for t in traces)


def test_with_a_device_down_the_edge_fuses_the_rest_after_the_deadline(
    bundle: FusionBundle, views: list[np.ndarray]
) -> None:
    wait_s = 0.3
    _, cloud = torch_logits(bundle, views, [1.0, 1.0, 0.0, 1.0])
    with deploy(bundle, wait_s=wait_s, exit_threshold=NEVER) as running:
        running.stop_device(2)
        with FusionClient(running.device_addresses) as client:
            started = time.perf_counter()
            result = client.infer(views)
            elapsed_s = time.perf_counter() - started

    assert result.trace.missing == (2,) and result.trace.fused == (0, 1, 3)
    assert result.trace.wait_ms >= wait_s * 1000 * 0.95
    assert elapsed_s >= wait_s * 0.95
    assert set(result.errors) == {2} and result.errors[2].status == "UNAVAILABLE"
    torch.testing.assert_close(torch.from_numpy(result.logits), cloud, atol=1e-4, rtol=1e-4)


def test_a_device_never_called_is_named_missing(
    bundle: FusionBundle, views: list[np.ndarray]
) -> None:
    with deploy(bundle, wait_s=0.2) as running:
        addresses = running.device_addresses
        replies = _call_devices_directly(addresses[:3], views[:3], "three-of-four")

    assert replies[0][1].missing == (3,)


def test_the_client_fails_only_when_no_device_answers(
    bundle: FusionBundle, views: list[np.ndarray]
) -> None:
    with deploy(bundle) as running:
        for index in range(4):
            running.stop_device(index)
        with (
            FusionClient(running.device_addresses, timeout_s=5.0) as client,
            pytest.raises(ServiceError, match="no device answered") as caught,
        ):
            client.infer(views)

    assert caught.value.status == "UNAVAILABLE"


@pytest.mark.parametrize("mode", ["max", "mean", "concat"])
def test_fusion_ignores_the_features_of_absent_devices(mode: str) -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(4, 3, 5, generator=generator)
    changed = features.clone()
    changed[1] = torch.rand(3, 5, generator=generator)
    mask = torch.tensor([1.0, 0.0, 1.0, 1.0])

    fused = fuse(features, mask, mode)  # type: ignore[arg-type]

    torch.testing.assert_close(fuse(changed, mask, mode), fused)  # type: ignore[arg-type]
    present = features[[0, 2, 3]]
    if mode == "max":
        torch.testing.assert_close(fused, present.max(dim=0).values)
    elif mode == "mean":
        torch.testing.assert_close(fused, present.mean(dim=0))
    else:
        assert fused.shape == (3, 20)
        assert torch.all(fused[:, 5:10] == 0)
        torch.testing.assert_close(fused[:, :5], features[0])


def test_the_exported_edge_ignores_a_masked_device(bundle: FusionBundle) -> None:
    rng = np.random.default_rng(0)
    features = rng.integers(0, 256, (4, 3, bundle.feature_dim), dtype=np.uint8)
    changed = features.copy()
    changed[3] = rng.integers(0, 256, (3, bundle.feature_dim), dtype=np.uint8)
    mask = np.array([1, 1, 1, 0], np.float32)

    out = bundle.edge.run({"features": features, "mask": mask})
    again = bundle.edge.run({"features": changed, "mask": mask})

    np.testing.assert_array_equal(out["edge_logits"], again["edge_logits"])
    np.testing.assert_array_equal(out["edge_features"], again["edge_features"])


def test_a_view_of_the_wrong_shape_is_refused_naming_the_tensor(bundle: FusionBundle) -> None:
    whole_image = np.zeros((1, 1, 28, 28), np.float32)

    with (
        deploy(bundle) as running,
        FusionClient(running.device_addresses, timeout_s=5.0) as client,
        pytest.raises(ServiceError) as caught,
    ):
        client.infer([whole_image] * 4)

    assert caught.value.status == "INVALID_ARGUMENT"
    assert "'view'" in str(caught.value) and "[1, 1, 28, 28]" in str(caught.value)


class _RecordingEdge:
    """An edge that records what a device sends it and answers with zeros."""

    tier = "edge"
    model = MODEL

    def __init__(self) -> None:
        self.requests: list[tuple[InferRequest, int]] = []
        self._lock = threading.Lock()

    def metadata(self) -> pb.ModelMetadataResponse:
        return pb.ModelMetadataResponse(name=MODEL)

    def infer(
        self, request: InferRequest, *, received_bytes: int, timeout_s: float | None
    ) -> InferResponse:
        with self._lock:
            self.requests.append((request, received_bytes))
        trace = FusionTrace("x", (0,), (), ("edge",))
        return serde.response_from_tensors(
            MODEL,
            {"logits": np.zeros((1, 10), np.float32)},
            parameters={FUSION_TRACE: trace.to_json()},
        )

    def close(self) -> None:
        return None


def test_the_device_sends_its_uint8_features_upward(
    bundle: FusionBundle, views: list[np.ndarray]
) -> None:
    recorder = _RecordingEdge()
    view = views[1][:1]
    with FusionServer(recorder) as edge:
        device = FusionServer(DeviceService(1, bundle.devices[1], upstream=edge.address))
        with device, FusionClient([device.address]) as client:
            client.infer([view], fusion_id="bytes")

    ((request, received_bytes),) = recorder.requests
    spec = request.header.inputs[0]
    expected = bundle.devices[1].run({"view": view})["features"]
    assert (spec.name, spec.datatype, list(spec.shape)) == (
        "features",
        "UINT8",
        [1, bundle.feature_dim],
    )
    assert bytes(request.raw[0]) == expected.tobytes()
    assert len(request.raw[0]) == bundle.feature_dim  # one byte per feature
    assert received_bytes == request.nbytes
    parameters = serde.string_parameters(request.header.parameters)
    assert parameters == {FUSION_ID: "bytes", FUSION_DEVICE: "1"}


def test_the_trace_counts_the_uint8_bytes_on_each_link(
    bundle: FusionBundle, views: list[np.ndarray]
) -> None:
    with (
        deploy(bundle, exit_threshold=NEVER) as running,
        FusionClient(running.device_addresses) as client,
    ):
        trace = client.infer(views).trace

    links = {(link.source, link.target): link for link in trace.links}
    for index in range(4):
        link = links[(f"device{index}", "edge")]
        assert link.payload_bytes == 6 * bundle.feature_dim
        assert link.wire_bytes > link.payload_bytes
    assert links[("edge", "cloud")].payload_bytes == 6 * bundle.edge_dim


def test_a_tampered_bundle_file_is_refused_by_name(bundle: FusionBundle, tmp_path: Path) -> None:
    for file in bundle.root.iterdir():
        (tmp_path / file.name).write_bytes(file.read_bytes())
    (tmp_path / "cloud.onnx").write_bytes(b"not onnx")

    with pytest.raises(FusionError, match=r"'cloud\.onnx'.*sha256"):
        load_bundle(tmp_path)


def _call_devices_directly(
    addresses: list[str], views: list[np.ndarray], fusion_id: str
) -> list[tuple[np.ndarray, FusionTrace]]:
    """Call each device on its own thread with the same fusion id, as separate clients."""
    replies: dict[int, tuple[np.ndarray, FusionTrace]] = {}

    def call(index: int) -> None:
        with FusionClient([addresses[index]]) as client:
            result = client.infer([views[index]], fusion_id=fusion_id)
        replies[index] = (result.logits, result.trace)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(addresses))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [replies[i] for i in range(len(addresses))]


def test_the_bundle_json_lists_a_sha256_for_every_file(bundle: FusionBundle) -> None:
    document = json.loads((bundle.root / "fusion.json").read_text())

    names = {entry["path"] for entry in document["files"].values()}

    assert {"device0.onnx", "edge.onnx", "cloud.onnx", "fusion.safetensors"} <= names
    assert all(len(entry["sha256"]) == 64 for entry in document["files"].values())


def test_bench_fusion_command_reuses_a_cached_bundle_and_reports_json(
    bundle: FusionBundle, tmp_path: Path
) -> None:
    # The fixture's small bundle stands in for a cached run, so the command only measures.
    settings = ModelSettings(mode="concat", train=TrainSettings(epochs=1))
    shutil.copytree(bundle.root, tmp_path / "cache" / settings.key)
    arguments = [
        sys.executable,
        "-m",
        "tierflow",
        "bench-fusion",
        "--epochs",
        "1",
        "--requests",
        "2",
        "--batch",
        "5",
    ]
    arguments += ["--wait-ms", "50", "--cache", str(tmp_path / "cache")]
    arguments += ["--out", str(tmp_path / "out"), "--json"]

    outcome = subprocess.run(arguments, capture_output=True, text=True, timeout=120, check=False)

    assert outcome.returncode == 0, outcome.stderr
    report = json.loads(outcome.stdout)
    assert report["devices"] == 4 and report["samples"] == 10
    assert report["raw_payload_bytes_per_sample"] == 4 * 14 * 14 * 4  # float32 views
    assert report["cached"] is True
    assert report["payload_bytes_per_sample"] >= 4 * bundle.feature_dim  # devices' features
    assert report["missing_seen"] == {"0": [0], "1": [1], "2": [2], "3": [3]}
    assert json.loads((tmp_path / "out" / "fusion.json").read_text()) == report
