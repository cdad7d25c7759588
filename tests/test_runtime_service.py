"""Tier services over real loopback sockets: answers, chaining, errors, auth, OIP clients."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack

import numpy as np
import pytest
from numpy.typing import NDArray

from tierflow.errors import ServiceError
from tierflow.runtime import serde
from tierflow.runtime.client import AsyncClient, connect
from tierflow.runtime.executor import IOSpec
from tierflow.runtime.route import Route, Upstream
from tierflow.runtime.server import TierServer
from tierflow.runtime.service import TierService
from tierflow.runtime.transport import GrpcTransport, InMemoryTransport


class Affine:
    """y = scale * x + shift on float32 vectors of length 4 (batch dynamic)."""

    def __init__(self, source: str, target: str, scale: float, shift: float) -> None:
        self._in = IOSpec(source, (-1, 4), "float32")
        self._out = IOSpec(target, (-1, 4), "float32")
        self.scale, self.shift = scale, shift

    @property
    def inputs(self) -> tuple[IOSpec, ...]:
        return (self._in,)

    @property
    def outputs(self) -> tuple[IOSpec, ...]:
        return (self._out,)

    def run(self, inputs: Mapping[str, NDArray[np.generic]]) -> dict[str, NDArray[np.generic]]:
        x = np.asarray(inputs[self._in.name], np.float32)
        return {self._out.name: (self.scale * x + self.shift).astype(np.float32)}


X = np.arange(8, dtype=np.float32).reshape(2, 4)


@pytest.fixture
def single() -> Iterator[TierServer]:
    service = TierService("affine", [Affine("x", "y", 2, 1)], route=Route("cloud"))
    with TierServer(service) as server:
        yield server


def _chain(stack: ExitStack) -> TierServer:
    """device (x→h1 = 2x+1) → edge (h1→h2 = 3h+0) → cloud (h2→y = h-5); returns device."""
    cloud = stack.enter_context(
        TierServer(TierService("m", [Affine("h2", "y", 1, -5)], route=Route("cloud")))
    )
    edge = stack.enter_context(
        TierServer(
            TierService(
                "m",
                [Affine("h1", "h2", 3, 0)],
                route=Route("edge", forward=("h2",), upstream=Upstream("cloud", cloud.address)),
                transport=GrpcTransport(),
            )
        )
    )
    return stack.enter_context(
        TierServer(
            TierService(
                "m",
                [Affine("x", "h1", 2, 1)],
                route=Route("device", forward=("h1",), upstream=Upstream("edge", edge.address)),
                transport=GrpcTransport(),
            )
        )
    )


def test_a_tier_service_answers_over_a_real_socket(single: TierServer) -> None:
    with connect(single.address) as client:
        result = client.infer(X)

    np.testing.assert_allclose(result.output, 2 * X + 1)
    assert result.trace is not None and result.trace.produced_by == "cloud"


def test_three_chained_tiers_compose_and_trace_every_tier_and_link() -> None:
    with ExitStack() as stack:
        device = _chain(stack)
        with connect(device.address) as client:
            result = client.infer({"x": X})

    np.testing.assert_allclose(result.output, 3 * (2 * X + 1) - 5)
    trace = result.trace
    assert trace is not None
    assert trace.tier_names == ("device", "edge", "cloud")
    assert trace.produced_by == "cloud"
    assert [(link.source, link.target) for link in trace.links] == [
        ("device", "edge"),
        ("edge", "cloud"),
    ]
    assert all(
        link.request_bytes >= X.nbytes and link.response_bytes >= X.nbytes for link in trace.links
    )


def test_the_in_memory_transport_gives_the_same_answer_without_sockets() -> None:
    transport = InMemoryTransport()
    transport.register("cloud", TierService("m", [Affine("h", "y", 1, -5)], route=Route("cloud")))
    device = TierService(
        "m",
        [Affine("x", "h", 2, 1)],
        route=Route("device", forward=("h",), upstream=Upstream("cloud", "cloud")),
        transport=transport,
    )

    response = device.infer(serde.request_from_tensors("m", {"x": X}))

    np.testing.assert_allclose(serde.tensors_from_response(response)["y"], 2 * X + 1 - 5)


def test_pipelined_requests_come_back_in_order(single: TierServer) -> None:
    inputs = [X + i for i in range(20)]

    with connect(single.address) as client:
        results = list(client.infer_many(inputs, max_in_flight=4))

    for x, result in zip(inputs, results, strict=True):
        np.testing.assert_allclose(result.output, 2 * x + 1)


def test_the_async_client_answers(single: TierServer) -> None:
    async def call() -> NDArray[np.generic]:
        async with await AsyncClient.connect(single.address, model="affine") as client:
            return (await client.infer(X)).output

    np.testing.assert_allclose(asyncio.run(call()), 2 * X + 1)


def test_tritonclient_gets_the_right_answer(single: TierServer) -> None:
    grpcclient = pytest.importorskip("tritonclient.grpc")
    client = grpcclient.InferenceServerClient(single.address)
    try:
        tensor = grpcclient.InferInput("x", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X)
        assert client.is_server_live() and client.is_model_ready("affine")
        result = client.infer("affine", [tensor])
        np.testing.assert_allclose(result.as_numpy("y"), 2 * X + 1)
    finally:
        client.close()


def test_a_wrong_shape_is_invalid_argument_naming_the_tensor(single: TierServer) -> None:
    with connect(single.address) as client, pytest.raises(ServiceError) as caught:
        client.infer(np.ones((2, 3), np.float32))

    assert caught.value.status == "INVALID_ARGUMENT"
    assert "'x'" in str(caught.value) and "[-1, 4]" in str(caught.value)


def test_an_unknown_model_is_not_found(single: TierServer) -> None:
    with pytest.raises(ServiceError) as caught:
        connect(single.address, model="resnet")

    assert caught.value.status == "NOT_FOUND"
    assert "resnet" in str(caught.value)


def test_a_payload_over_the_limit_is_resource_exhausted() -> None:
    service = TierService("affine", [Affine("x", "y", 2, 1)], route=Route("cloud"))
    with (
        TierServer(service, max_message_bytes=64 * 1024) as server,
        connect(server.address) as client,
        pytest.raises(ServiceError) as caught,
    ):
        client.infer(np.ones((8192, 4), np.float32))

    assert caught.value.status == "RESOURCE_EXHAUSTED"
    assert str(64 * 1024) in str(caught.value)


def _dead_address() -> str:
    with socket.socket() as sock:  # bound then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_an_upstream_that_is_down_is_unavailable_naming_the_tier_within_the_deadline() -> None:
    service = TierService(
        "m",
        [Affine("x", "h", 2, 1)],
        route=Route("device", forward=("h",), upstream=Upstream("cloud", _dead_address())),
        transport=GrpcTransport(),
    )
    with TierServer(service) as server, connect(server.address) as client:
        started = time.perf_counter()
        with pytest.raises(ServiceError) as caught:
            client.infer(X, timeout_s=3.0)
        elapsed = time.perf_counter() - started

    assert caught.value.status == "UNAVAILABLE"
    assert "'cloud'" in str(caught.value)
    assert elapsed < 3.0


def test_a_token_is_required_when_configured() -> None:
    service = TierService("affine", [Affine("x", "y", 2, 1)], route=Route("cloud"))
    with TierServer(service, token="s3cret") as server:
        with pytest.raises(ServiceError) as caught:
            connect(server.address)
        with connect(server.address, token="s3cret") as client:
            np.testing.assert_allclose(client.infer(X).output, 2 * X + 1)

    assert caught.value.status == "UNAUTHENTICATED"


def test_metrics_count_requests_in_a_registry_per_server(single: TierServer) -> None:
    other = TierServer(TierService("affine", [Affine("x", "y", 2, 1)], route=Route("edge")))

    with connect(single.address) as client:
        client.infer(X)

    labels = {"tier": "cloud", "method": "ModelInfer", "code": "OK"}
    assert single.metrics.registry.get_sample_value("tierflow_requests_total", labels) == 1.0
    assert other.metrics.registry is not single.metrics.registry
    other.stop()


def test_metrics_are_served_over_http_when_a_port_is_given() -> None:
    import urllib.request

    service = TierService("affine", [Affine("x", "y", 2, 1)], route=Route("cloud"))
    with TierServer(service, metrics_port=0) as server:
        with connect(server.address) as client:
            client.infer(X)
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()

    assert 'tierflow_requests_total{code="OK",method="ModelInfer",tier="cloud"} 1.0' in text
    assert "tierflow_request_bytes_total" in text


class Slow(Affine):
    def run(self, inputs: Mapping[str, NDArray[np.generic]]) -> dict[str, NDArray[np.generic]]:
        time.sleep(1.0)
        return super().run(inputs)


def test_the_callers_deadline_bounds_the_call_upstream() -> None:
    cloud_service = TierService("m", [Slow("h", "y", 1, 0)], route=Route("cloud"))
    with TierServer(cloud_service) as cloud:
        device_service = TierService(
            "m",
            [Affine("x", "h", 2, 1)],
            route=Route("device", forward=("h",), upstream=Upstream("cloud", cloud.address)),
            transport=GrpcTransport(),
        )
        with TierServer(device_service) as device, connect(device.address) as client:
            with pytest.raises(ServiceError) as caught:
                client.infer(X, timeout_s=0.3)
            labels = {"tier": "device", "method": "ModelInfer", "code": "DEADLINE_EXCEEDED"}
            registry = device.metrics.registry
            for _ in range(100):  # the device's handler ends once its upstream call times out
                if registry.get_sample_value("tierflow_requests_total", labels):
                    break
                time.sleep(0.01)
            device_s = registry.get_sample_value(
                "tierflow_request_latency_seconds_sum", {"tier": "device", "method": "ModelInfer"}
            )

    assert caught.value.status == "DEADLINE_EXCEEDED"
    assert device_s is not None and device_s < 0.6  # it gave up with the caller, not after 1 s
