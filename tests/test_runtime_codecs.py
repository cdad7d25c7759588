"""Activation codecs on the wire: a link compresses the cut tensor it sends upward.

zoo:lenet split after ``pool2`` ([B, 16, 5, 5] float32) across two tiers on real loopback
gRPC servers, the device tier sending ``pool2`` as ``int8+zstd``.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import tierflow.cli.commands_serve  # registers the commands, as main() does
from test_serve_cli import read_line, tierflow
from tierflow import capture, resolve_model
from tierflow.artifacts import Manifest, build, load_executors, load_manifest, run_chain
from tierflow.artifacts.manifest import MANIFEST_NAME
from tierflow.cli.app import app
from tierflow.cli.commands_serve import parse_codecs
from tierflow.compress.codecs import codec_from_spec
from tierflow.data import load_dataset
from tierflow.errors import ArtifactError, ServiceError, TierflowError, TopologyError
from tierflow.partition.from_plan import expand_assignment
from tierflow.plan.evaluate import Prediction
from tierflow.plan.plan import Plan
from tierflow.runtime import serde
from tierflow.runtime.client import Result, connect
from tierflow.runtime.link_codecs import CODEC_PARAMETER, decode_tensors, encode_tensors
from tierflow.runtime.manifest_route import route_from_manifest
from tierflow.runtime.manifest_service import service_from_manifest
from tierflow.runtime.route import Route, Upstream
from tierflow.runtime.server import TierServer
from tierflow.runtime.trace import LinkHop, Trace
from tierflow.runtime.transport import GrpcTransport

SPEC = "zoo:lenet"
TIERS = ("device", "cloud")
CUT = "pool2"  # the last node on the device; its output is the only tensor that crosses
CODEC = "int8+zstd"
runner = CliRunner()


def plan_cut_after(node: str) -> Plan:
    """Two tiers: every node up to ``node`` (topological order) on the device."""
    model, inputs = resolve_model(SPEC)
    names = [n.name for n in capture(model, inputs).nodes]
    cut = names.index(node)
    tiers = {name: TIERS[i > cut] for i, name in enumerate(names)}
    return Plan(
        model=SPEC,
        objective="manual",
        tiers=TIERS,
        assignment=expand_assignment(capture(model, inputs), tiers),
        cuts=(),
        predicted=Prediction(0.0, None, {}, 0.0, {}, {}),
        baselines={},
    )


def with_link_codecs(manifest: Manifest, out: Path, codecs: dict[str, dict[str, str]]) -> Manifest:
    """A copy of the artifact whose manifest.json carries ``link_codecs``."""
    out.mkdir()
    for entry in (manifest.plan_file, *(f for s in manifest.segments for f in s.files)):
        (out / entry.path).write_bytes((manifest.root / entry.path).read_bytes())
    changed = dataclasses.replace(manifest, link_codecs=codecs, root=out)
    (out / MANIFEST_NAME).write_text(changed.to_json() + "\n")
    return load_manifest(out)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    model, inputs = resolve_model(SPEC)
    return build(model, plan_cut_after(CUT), inputs, tmp_path_factory.mktemp("lenet-2tier"))


@pytest.fixture(scope="module")
def compressed(plain: Manifest, tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    out = tmp_path_factory.mktemp("codecs") / "artifact"
    return with_link_codecs(plain, out, {"device": {CUT: CODEC}})


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """32 real MNIST digits, [32, 1, 28, 28] float32 in [0, 1]."""
    return np.ascontiguousarray(load_dataset("mnist5k").test.x[:32], dtype=np.float32)


@contextmanager
def two_tiers(manifest: Manifest) -> Iterator[dict[str, TierServer]]:
    """Both tiers of ``manifest`` on loopback gRPC servers, the device forwarding to the
    cloud; by tier."""
    with ExitStack() as stack:
        cloud = stack.enter_context(TierServer(service_from_manifest(manifest, "cloud")))
        transport = GrpcTransport()
        stack.callback(transport.close)
        device = service_from_manifest(
            manifest,
            "device",
            upstream=Upstream("cloud", cloud.address),
            transport=transport,
        )
        yield {"device": stack.enter_context(TierServer(device)), "cloud": cloud}


def infer(manifest: Manifest, x: np.ndarray) -> Result:
    with (
        two_tiers(manifest) as servers,
        connect(servers["device"].address) as client,
    ):
        return client.infer(x)


def link_of(result: Result) -> LinkHop:
    assert result.trace is not None
    (link,) = result.trace.links
    return link


@pytest.fixture(scope="module")
def results(plain: Manifest, compressed: Manifest, digits: np.ndarray) -> dict[str, Result]:
    return {"raw": infer(plain, digits), "int8+zstd": infer(compressed, digits)}


def test_the_compressed_cut_gives_the_cloud_exactly_the_codecs_reconstruction(
    plain: Manifest, digits: np.ndarray, results: dict[str, Result]
) -> None:
    device, cloud = load_executors(plain)
    (cut,) = device.run({"x": digits}).values()
    codec = codec_from_spec(CODEC)
    restored = codec.decode(codec.encode(cut))

    (expected,) = cloud.run({CUT: restored}).values()

    assert np.abs(restored - cut).max() <= codec.max_abs_error(cut)
    np.testing.assert_allclose(results["int8+zstd"].output, expected, rtol=1e-5, atol=1e-5)


def test_the_compressed_cut_keeps_every_digits_class(results: dict[str, Result]) -> None:
    raw, lossy = results["raw"].output, results["int8+zstd"].output

    np.testing.assert_array_equal(lossy.argmax(axis=1), raw.argmax(axis=1))
    # int8 on [0, max] steps max/255: the logits move by far less than their spread.
    assert np.abs(lossy - raw).max() < 0.02 * np.ptp(raw)


def test_the_link_sends_at_least_three_times_fewer_bytes(results: dict[str, Result]) -> None:
    raw, lossy = link_of(results["raw"]), link_of(results["int8+zstd"])

    assert raw.request_bytes >= 3 * lossy.request_bytes, (raw, lossy)
    assert lossy.codecs == {CUT: CODEC}
    assert raw.codecs == {}


def test_the_trace_names_the_codec_and_round_trips(results: dict[str, Result]) -> None:
    trace = results["int8+zstd"].trace
    assert trace is not None

    assert Trace.from_json(trace.to_json()) == trace
    assert f"{CUT} {CODEC}" in str(trace)


def test_a_manifest_without_codecs_behaves_exactly_as_before(
    plain: Manifest, digits: np.ndarray, results: dict[str, Result]
) -> None:
    document = json.loads((plain.root / MANIFEST_NAME).read_text())
    route = route_from_manifest(plain, "device", Upstream("cloud", "c:1"))
    trace = results["raw"].trace
    assert trace is not None

    assert "link_codecs" not in document and plain.link_codecs == {}
    assert route.codecs == {} and "codecs" not in route.to_dict()
    assert "codecs" not in json.loads(trace.to_json())["links"][0]
    (chained,) = run_chain(load_executors(plain), {"x": digits}).values()
    np.testing.assert_array_equal(results["raw"].output, chained)


def test_a_malformed_payload_is_refused_naming_the_tensor(compressed: Manifest) -> None:
    good = codec_from_spec(CODEC).encode(np.ones((1, 16, 5, 5), dtype=np.float32))
    bad = np.frombuffer(b"XXXX" + good[4:], dtype=np.uint8)  # wrong magic
    request = serde.request_from_tensors(
        compressed.model, {CUT: bad}, tensor_parameters={CUT: {CODEC_PARAMETER: CODEC}}
    )
    transport = GrpcTransport()

    try:
        with two_tiers(compressed) as servers, pytest.raises(ServiceError) as raised:
            transport.infer(servers["cloud"].address, request, tier="cloud", timeout_s=10)
    finally:
        transport.close()

    assert raised.value.status == "INVALID_ARGUMENT"
    assert repr(CUT) in str(raised.value) and "magic" in str(raised.value)


def test_a_decoded_tensor_of_the_wrong_shape_is_refused_by_the_input_check(
    compressed: Manifest,
) -> None:
    payload = codec_from_spec(CODEC).encode(np.ones((1, 16, 4, 4), dtype=np.float32))
    request = serde.request_from_tensors(
        compressed.model,
        {CUT: np.frombuffer(payload, dtype=np.uint8)},
        tensor_parameters={CUT: {CODEC_PARAMETER: CODEC}},
    )
    cloud = service_from_manifest(compressed, "cloud")

    with pytest.raises(ServiceError, match=r"'pool2' is float32 \[1, 16, 4, 4\]") as raised:
        cloud.infer(request)

    assert raised.value.status == "INVALID_ARGUMENT"


def test_a_marked_tensor_that_is_not_a_byte_vector_is_refused() -> None:
    with pytest.raises(TierflowError, match="'h' is marked tierflow-codec='int8'"):
        decode_tensors({"h": np.zeros((2, 2), dtype=np.float32)}, {"h": {CODEC_PARAMETER: "int8"}})


def test_encoded_tensors_are_uint8_vectors_marked_with_their_codec() -> None:
    x = np.linspace(0, 1, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    ids = np.arange(3, dtype=np.int64)

    sent, marks = encode_tensors({"h": x, "ids": ids}, {"h": codec_from_spec("fp16")})
    request = serde.request_from_tensors("m", sent, tensor_parameters=marks)
    received = decode_tensors(serde.tensors_from_request(request), serde.input_parameters(request))

    assert request.header.inputs[0].datatype == "UINT8" and len(request.header.inputs[0].shape) == 1
    assert serde.input_parameters(request) == {"h": {CODEC_PARAMETER: "fp16"}}
    np.testing.assert_allclose(received["h"], x, atol=1e-3)
    np.testing.assert_array_equal(received["ids"], ids)


def test_tensors_without_a_codec_mark_are_passed_through_uncopied() -> None:
    pool = {"h": np.ones(3, dtype=np.uint8)}

    assert decode_tensors(pool, {"h": {"other": "x"}}) is pool


def test_a_route_carries_its_codecs_through_a_dict_round_trip() -> None:
    route = Route("edge", forward=("h",), upstream=Upstream("cloud", "c:1"), codecs={"h": CODEC})

    assert Route.from_dict(route.to_dict()) == route
    assert route.to_dict()["codecs"] == {"h": CODEC}


@pytest.mark.parametrize(
    ("codecs", "message"),
    [({"g": CODEC}, "does not forward"), ({"h": "int3"}, "unknown codec 'int3'")],
)
def test_a_route_refuses_a_codec_it_cannot_apply(codecs: dict[str, str], message: str) -> None:
    with pytest.raises(TopologyError, match=message):
        Route("edge", forward=("h",), upstream=Upstream("cloud", "c:1"), codecs=codecs)


def test_codecs_given_to_the_service_override_the_manifests(compressed: Manifest) -> None:
    def route(**codecs: str):
        return route_from_manifest(compressed, "device", Upstream("cloud", "c:1"), codecs=codecs)

    assert route().codecs == {CUT: CODEC}
    assert route(pool2="int4+zstd").codecs == {CUT: "int4+zstd"}
    assert route(pool2="none").codecs == {}


@pytest.mark.parametrize(
    ("codecs", "message"),
    [
        ({"x": CODEC}, "tier 'device': the tier does not forward it"),
        ({CUT: "int3"}, "unknown codec"),
    ],
)
def test_the_route_derivation_refuses_codecs_that_do_not_fit(
    plain: Manifest, codecs: dict[str, str], message: str
) -> None:
    with pytest.raises(ArtifactError, match=message):
        route_from_manifest(plain, "device", Upstream("cloud", "c:1"), codecs=codecs)


def test_a_malformed_link_codecs_section_is_refused(plain: Manifest) -> None:
    document = plain.to_dict() | {"link_codecs": {"device": "int8"}}

    with pytest.raises(ArtifactError, match="link_codecs must map a tier"):
        Manifest.from_dict(document, root=plain.root, source="m.json")


def test_serve_sends_the_cut_with_the_codec_given_on_its_command_line(
    plain: Manifest, digits: np.ndarray
) -> None:
    with TierServer(service_from_manifest(plain, "cloud")) as cloud:
        command = [
            *("serve", "--manifest", str(plain.root), "--tier", "device"),
            *("--upstream", cloud.address, "--codec", f"{CUT}=int4+zstd"),
        ]
        device = subprocess.Popen(tierflow(*command), stdout=subprocess.PIPE, text=True)
        try:
            address = read_line(device, timeout_s=60).split()[-1]
            with connect(address) as client:
                result = client.infer(digits[:4])
        finally:
            device.terminate()
            device.wait(timeout=30)
            assert device.stdout is not None
            device.stdout.close()

    assert link_of(result).codecs == {CUT: "int4+zstd"}
    assert result.output.shape == (4, 10)


def test_serve_refuses_a_codec_for_a_tensor_its_tier_does_not_send(plain: Manifest) -> None:
    result = runner.invoke(
        app,
        [
            *("serve", "--manifest", str(plain.root), "--tier", "device"),
            *("--upstream", "127.0.0.1:1", "--codec", "fc1=int8"),
        ],
    )

    assert result.exit_code != 0
    assert "'fc1'" in result.output and "does not forward it" in result.output


def test_serve_codec_options_parse_tensor_equals_spec() -> None:
    assert parse_codecs(["pool2=int8+zstd", "h = fp16"]) == {"pool2": "int8+zstd", "h": "fp16"}
    with pytest.raises(TierflowError, match="expected TENSOR=SPEC"):
        parse_codecs(["pool2"])
