"""Tier services with early exits: a confident exit answers at once, else the backbone does."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

# Importing the command modules registers `build` and `serve` on the app, as main() does.
import tierflow.cli.commands_build
from test_build_exits import (
    DEVICE_EXIT,
    EDGE_EXIT,
    backbone_value,
    confident_head,
    lenet,
    plan_with_exit,
    unsure_head,
)
from test_serve_cli import read_line, tierflow
from tierflow.artifacts import Manifest, build, load_manifest, load_tier_exits
from tierflow.cli.app import app
from tierflow.errors import ArtifactError
from tierflow.plan.plan import Plan
from tierflow.runtime import serde
from tierflow.runtime.client import connect
from tierflow.runtime.manifest_service import service_from_manifest
from tierflow.runtime.route import Upstream
from tierflow.runtime.server import TierServer
from tierflow.runtime.service import TierService
from tierflow.runtime.trace import TRACE_PARAMETER, Trace
from tierflow.runtime.transport import GrpcTransport, InMemoryTransport
from tierflow.runtime.wire import InferRequest, InferResponse

TIERS = ("device", "edge", "cloud")
runner = CliRunner()


class CountingTransport:
    """An in-memory transport that counts the requests each tier receives."""

    def __init__(self) -> None:
        self.inner = InMemoryTransport()
        self.received: Counter[str] = Counter()

    def register(self, address: str, service: TierService) -> None:
        self.inner.register(address, service)

    def infer(
        self, address: str, request: InferRequest, *, tier: str, timeout_s: float | None
    ) -> InferResponse:
        self.received[tier] += 1
        return self.inner.infer(address, request, tier=tier, timeout_s=timeout_s)

    def close(self) -> None:
        self.inner.close()


class MeanScore(nn.Module):
    """Logits ``[k * mean(h), 0, ..., 0]``: confidence grows with the sample's mean value."""

    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        score = self.k * h.mean(dim=(1, 2, 3)).unsqueeze(1)
        return nn.functional.pad(score, (0, 9))


def build_with(
    tmp: Path, head: nn.Module, *, at=DEVICE_EXIT, threshold=0.9
) -> tuple[Manifest, Plan]:
    model, inputs = lenet()
    plan = plan_with_exit(model, inputs, at=at, threshold=threshold)
    return build(model, plan, inputs, tmp, exit_heads={"early": head}), plan


def in_memory_chain(manifest: Manifest) -> tuple[TierService, CountingTransport]:
    """Every tier's service from the manifest, chained in memory; returns the device's."""
    transport = CountingTransport()
    services: dict[str, TierService] = {}
    for index in reversed(range(len(TIERS))):
        tier = TIERS[index]
        upstream = Upstream(TIERS[index + 1], TIERS[index + 1]) if index + 1 < len(TIERS) else None
        services[tier] = service_from_manifest(
            manifest, tier, upstream=upstream, transport=transport if upstream else None
        )
        transport.register(tier, services[tier])
    return services["device"], transport


def ask(service: TierService, x: np.ndarray) -> tuple[dict[str, np.ndarray], Trace]:
    response = service.infer(serde.request_from_tensors(service.model, {"x": x}))
    trace = Trace.from_json(serde.string_parameters(response.header.parameters)[TRACE_PARAMETER])
    return serde.tensors_from_response(response), trace


def samples(n: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    _, inputs = lenet()
    shape = (n, *inputs[0].shape[1:])
    return (scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed))).numpy()


def test_a_confident_exit_answers_at_once_and_nothing_goes_upstream(tmp_path: Path) -> None:
    head = confident_head(DEVICE_EXIT[2])
    manifest, plan = build_with(tmp_path, head)
    device, transport = in_memory_chain(manifest)
    x = samples(2)

    outputs, trace = ask(device, x)

    assert transport.received == Counter()
    assert list(outputs) == ["fc3"]  # the model's output name, whichever exit answers
    model, _ = lenet()
    expected = head(backbone_value(model, plan, torch.from_numpy(x), "relu")).detach()
    torch.testing.assert_close(torch.from_numpy(outputs["fc3"].copy()), expected)
    assert (trace.exit, trace.produced_by, trace.tier_names, trace.links) == (
        "early",
        "device",
        ("device",),
        (),
    )


def test_an_exit_never_confident_gives_the_backbone_output(tmp_path: Path) -> None:
    manifest, _ = build_with(tmp_path, unsure_head(DEVICE_EXIT[2]))
    device, transport = in_memory_chain(manifest)
    model, _ = lenet()
    x = samples(3, seed=1)

    outputs, trace = ask(device, x)

    torch.testing.assert_close(
        torch.from_numpy(outputs["fc3"].copy()),
        model(torch.from_numpy(x)).detach(),
        rtol=1e-4,
        atol=1e-4,
    )
    assert (trace.exit, trace.produced_by, trace.tier_names) == ("final", "cloud", TIERS)
    assert transport.received == Counter({"edge": 1, "cloud": 1})


def test_a_threshold_above_one_never_answers(tmp_path: Path) -> None:
    manifest, _ = build_with(tmp_path, confident_head(DEVICE_EXIT[2]), threshold=1.01)
    device, transport = in_memory_chain(manifest)

    _, trace = ask(device, samples(1))

    assert trace.exit == "final" and transport.received["cloud"] == 1


@pytest.fixture(scope="module")
def mixed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TierService, CountingTransport, np.ndarray, np.ndarray]]:
    """A head whose confidence depends on the sample, with a threshold between two samples."""
    model, inputs = lenet()
    plan = plan_with_exit(model, inputs)
    head = MeanScore(k=50.0)
    low, high = samples(1, seed=3, scale=0.0), samples(1, seed=3, scale=3.0)
    confidence = [
        torch.softmax(head(backbone_value(model, plan, torch.from_numpy(x), "relu")), 1).max()
        for x in (low, high)
    ]
    assert abs(float(confidence[0] - confidence[1])) > 0.05, confidence
    sure, unsure = (high, low) if confidence[1] > confidence[0] else (low, high)
    threshold = float(sum(confidence)) / 2
    manifest, _ = build_with(tmp_path_factory.mktemp("mixed"), head, threshold=threshold)
    device, transport = in_memory_chain(manifest)
    yield device, transport, sure, unsure


def test_each_request_exits_by_its_own_confidence(mixed) -> None:
    device, transport, sure, unsure = mixed
    transport.received.clear()

    _, answered = ask(device, sure)
    _, continued = ask(device, unsure)

    assert (answered.exit, answered.produced_by) == ("early", "device")
    assert (continued.exit, continued.produced_by) == ("final", "cloud")
    assert transport.received == Counter({"edge": 1, "cloud": 1})


def test_a_batch_exits_only_when_every_sample_is_confident(mixed) -> None:
    device, transport, sure, unsure = mixed
    model, _ = lenet()
    transport.received.clear()
    both = np.concatenate([sure, unsure])

    outputs, trace = ask(device, both)
    _, all_sure = ask(device, np.concatenate([sure, sure]))

    assert trace.exit == "final" and transport.received["cloud"] == 1
    torch.testing.assert_close(
        torch.from_numpy(outputs["fc3"].copy()),
        model(torch.from_numpy(both)).detach(),
        rtol=1e-4,
        atol=1e-4,
    )
    assert all_sure.exit == "early" and transport.received["cloud"] == 1


def test_a_trace_without_an_exit_field_reads_as_final() -> None:
    old = '{"produced_by":"cloud","tiers":[],"links":[]}'

    trace = Trace.from_json(old)

    assert trace.exit == "final"
    assert Trace.from_json(Trace("edge", exit="early").to_json()).exit == "early"
    assert "at exit early" in str(Trace("edge", exit="early"))


def test_a_tampered_head_stops_the_tier_from_starting(tmp_path: Path) -> None:
    manifest, _ = build_with(tmp_path, unsure_head(DEVICE_EXIT[2]))
    head_file = tmp_path / "exit-early.onnx"
    head_file.write_bytes(b"not the head" + head_file.read_bytes())

    with pytest.raises(ArtifactError, match=r"exit-early\.onnx has sha256"):
        service_from_manifest(
            manifest, "device", upstream=Upstream("edge", "e"), transport=CountingTransport()
        )


def grpc_chain(stack: ExitStack, manifest: Manifest) -> dict[str, TierServer]:
    """Every tier of the manifest on a real loopback gRPC server, chained; by tier."""
    servers: dict[str, TierServer] = {}
    for index in reversed(range(len(TIERS))):
        tier = TIERS[index]
        upstream = None
        if index + 1 < len(TIERS):
            upstream = Upstream(TIERS[index + 1], servers[TIERS[index + 1]].address)
        service = service_from_manifest(
            manifest, tier, upstream=upstream, transport=GrpcTransport() if upstream else None
        )
        servers[tier] = stack.enter_context(TierServer(service))
    return servers


def infer_count(server: TierServer) -> float:
    labels = {"tier": server.service.tier, "method": "ModelInfer", "code": "OK"}
    return server.metrics.registry.get_sample_value("tierflow_requests_total", labels) or 0.0


def answers(server: TierServer, exit_name: str) -> float:
    labels = {"tier": server.service.tier, "exit": exit_name}
    return server.metrics.registry.get_sample_value("tierflow_answers_total", labels) or 0.0


def test_an_exit_on_the_middle_tier_answers_over_real_sockets_without_the_cloud(
    tmp_path: Path,
) -> None:
    head = confident_head(EDGE_EXIT[2])
    manifest, plan = build_with(tmp_path, head, at=EDGE_EXIT)
    model, _ = lenet()
    x = samples(2, seed=4)

    with ExitStack() as stack:
        servers = grpc_chain(stack, manifest)
        with connect(servers["device"].address) as client:
            result = client.infer(x)
        counts = {tier: infer_count(server) for tier, server in servers.items()}
        edge_answers = answers(servers["edge"], "early")

    expected = head(backbone_value(model, plan, torch.from_numpy(x), "pool2")).detach()
    torch.testing.assert_close(torch.from_numpy(result.outputs["fc3"].copy()), expected)
    assert counts == {"device": 1.0, "edge": 1.0, "cloud": 0.0}
    assert edge_answers == 1.0
    trace = result.trace
    assert trace is not None
    assert (trace.exit, trace.produced_by, trace.tier_names) == (
        "early",
        "edge",
        ("device", "edge"),
    )
    assert [(link.source, link.target) for link in trace.links] == [("device", "edge")]


def test_a_middle_tier_exit_that_is_unsure_forwards_to_the_cloud_over_real_sockets(
    tmp_path: Path,
) -> None:
    manifest, _ = build_with(tmp_path, unsure_head(EDGE_EXIT[2]), at=EDGE_EXIT)
    model, _ = lenet()
    x = samples(2, seed=5)

    with ExitStack() as stack:
        servers = grpc_chain(stack, manifest)
        with connect(servers["device"].address) as client:
            result = client.infer(x)
        cloud_final = answers(servers["cloud"], "final")

    torch.testing.assert_close(
        torch.from_numpy(result.output.copy()),
        model(torch.from_numpy(x)).detach(),
        rtol=1e-4,
        atol=1e-4,
    )
    assert result.trace is not None and result.trace.exit == "final"
    assert result.trace.tier_names == TIERS and cloud_final == 1.0


def test_tierflow_serve_runs_the_exits_the_manifest_names(tmp_path: Path) -> None:
    build_with(tmp_path, confident_head(DEVICE_EXIT[2]))
    with socket.socket() as sock:  # bound then closed: no edge tier listens there
        sock.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{sock.getsockname()[1]}"
    command = tierflow("serve", "--manifest", str(tmp_path), "--tier", "device")
    command += ["--upstream", nobody]
    with (
        (tmp_path / "device.err").open("w") as errors,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True) as process,
    ):
        try:
            address = read_line(process, 60).split()[-1]
            with connect(address) as client:
                result = client.infer(samples(1, seed=6))
        finally:
            process.terminate()
            process.wait(timeout=10)

    assert result.trace is not None
    assert (result.trace.exit, result.trace.produced_by) == ("early", "device")
    assert list(result.outputs) == ["fc3"]


def test_cli_build_refuses_exits_when_the_model_is_not_a_trained_run(tmp_path: Path) -> None:
    model, inputs = lenet()
    plan_with_exit(model, inputs).save(tmp_path / "plan.json")

    result = runner.invoke(app, ["build", str(tmp_path / "plan.json"), "--out", str(tmp_path)])

    assert result.exit_code == 2
    assert "early exits (early)" in result.output and "run:DIR" in result.output


def test_cli_build_exports_the_heads_of_the_trained_run_the_plan_names(tmp_path: Path) -> None:
    from tierflow.exits.heads import default_head_spec
    from tierflow.train.run_dir import ExitSpec, RunConfig, build_exit_model, save_weights

    # A linear head: the default conv head's adaptive max pooling (28 -> 6) has no ONNX
    # export in torch 2.x (neither exporter), so it cannot be built yet.
    run = tmp_path / "run"
    head = ExitSpec("early", "flatten", default_head_spec((400,), 10))
    config = RunConfig("zoo:lenet", (1, 1, 28, 28), "none", 10, "max_softmax", (head,))
    config.save(run)
    exit_model, inputs = build_exit_model(config)
    save_weights(exit_model, run)
    plan = dataclasses.replace(
        plan_with_exit(exit_model.backbone, inputs, at=("flatten", "edge", 0)), model=f"run:{run}"
    )
    plan.save(tmp_path / "plan.json")

    result = runner.invoke(
        app, ["build", str(tmp_path / "plan.json"), "--out", str(tmp_path / "a")]
    )

    assert result.exit_code == 0, result.output
    (entry,) = load_manifest(tmp_path / "a").exits
    (early,) = load_tier_exits(load_manifest(tmp_path / "a"), "edge")
    h = backbone_value(exit_model.backbone, plan, inputs[0], "flatten")
    logits = early.head.run({"flatten": h.numpy()})[early.logits]
    expected = exit_model.heads["early"](h).detach()
    torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=1e-4, atol=1e-4)
    assert (entry.name, entry.input.name) == ("early", "flatten")
