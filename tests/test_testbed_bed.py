"""The testbed: a built plan served by one real process per tier, over real sockets."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import pytest

from test_artifacts import plan_by_position
from tierflow import resolve_model
from tierflow.artifacts import Manifest, build, load_manifest
from tierflow.errors import ArtifactError, ServiceError, TestbedError
from tierflow.runtime.client import connect
from tierflow.runtime.manifest_route import route_from_manifest
from tierflow.runtime.route import Upstream
from tierflow.testbed import Testbed, cpu
from tierflow.topology import Topology, topology_from_dict

SPEC = "zoo:lenet"
NAMES = ("device", "edge", "cloud")  # plan_by_position's tiers
CGROUP_MISSING = cpu.unavailable_reason()


def three_tiers(bandwidth_mbps: float = 200.0) -> Topology:
    return topology_from_dict(
        {
            "tiers": [
                {"name": "device", "kind": "device", "compute": {"speed": 0.5}},
                {"name": "edge", "kind": "edge", "compute": {"speed": 0.5}},
                {"name": "cloud", "kind": "cloud", "compute": {"speed": 2.0}},
            ],
            "links": [
                {"from": "device", "to": "edge", "bandwidth_mbps": bandwidth_mbps, "rtt_ms": 1},
                {"from": "edge", "to": "cloud", "bandwidth_mbps": bandwidth_mbps, "rtt_ms": 1},
            ],
        }
    )


@pytest.fixture(scope="module")
def lenet():
    model, inputs = resolve_model(SPEC)
    x = inputs[0].numpy()
    return model, x, model(*inputs).detach().numpy()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, lenet) -> Manifest:
    model, _x, _ = lenet
    inputs = (resolve_model(SPEC)[1][0],)
    plan = plan_by_position(SPEC, model, inputs)
    return build(model, plan, inputs, tmp_path_factory.mktemp("lenet3"))


@pytest.fixture(scope="module")
def bed(artifact: Manifest):
    with Testbed(three_tiers(), artifact.root) as running:
        yield running


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def cpu_cgroup(pid: int) -> str:
    """The cpu controller's cgroup path of ``pid``, e.g. ``/tierflow/edge-1a2b3c4d``."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return path
    return "/"


# -- route_from_manifest ---------------------------------------------------------------------


def test_each_tier_forwards_what_higher_tiers_consume(artifact: Manifest) -> None:
    edge, cloud = artifact.segment("edge"), artifact.segment("cloud")
    up = Upstream("next", "127.0.0.1:1")

    device_route = route_from_manifest(artifact, "device", up)
    edge_route = route_from_manifest(artifact, "edge", up)
    cloud_route = route_from_manifest(artifact, "cloud", None)

    assert device_route.forward == tuple(v.name for v in edge.inputs)
    assert edge_route.forward == tuple(v.name for v in cloud.inputs)
    assert cloud_route.forward == () and cloud_route.upstream is None
    final = tuple(v.name for v in cloud.outputs)
    assert device_route.outputs == edge_route.outputs == cloud_route.outputs == final


def test_a_tier_without_a_segment_relays(tmp_path: Path, lenet) -> None:
    model, _, _ = lenet
    inputs = (resolve_model(SPEC)[1][0],)
    plan = plan_by_position(SPEC, model, inputs, fractions=(0.5, 0.5))  # edge gets nothing
    manifest = build(model, plan, inputs, tmp_path)
    assert "edge" not in manifest.tiers

    route = route_from_manifest(manifest, "edge", Upstream("cloud", "127.0.0.1:1"))

    assert route.forward == tuple(v.name for v in manifest.segment("cloud").inputs)
    assert route.outputs == tuple(v.name for v in manifest.segment("cloud").outputs)


def test_a_needed_upstream_that_is_missing_is_refused(artifact: Manifest) -> None:
    with pytest.raises(ArtifactError, match="'edge' must forward"):
        route_from_manifest(artifact, "edge", None)


# -- the running testbed ---------------------------------------------------------------------


def test_a_three_tier_testbed_equals_the_local_model(bed: Testbed, lenet) -> None:
    _, x, expected = lenet

    with connect(bed.entry) as client:
        result = client.infer(x)

    np.testing.assert_allclose(result.output, expected, rtol=1e-4, atol=1e-4)
    assert result.trace is not None
    assert result.trace.tier_names == NAMES
    assert [(h.source, h.target) for h in result.trace.links] == [
        ("device", "edge"),
        ("edge", "cloud"),
    ]
    assert all(h.request_bytes > 0 and h.response_bytes > 0 for h in result.trace.links)
    stats = bed.link_stats()
    assert set(stats) == {"device->edge", "edge->cloud"}
    assert all(s.bytes_up > 0 and s.bytes_down > 0 for s in stats.values())


def test_the_ready_record_names_every_tier_and_the_entry(bed: Testbed) -> None:
    record = bed.ready_record()

    assert list(record["tiers"]) == list(NAMES)
    assert record["entry"] == record["tiers"]["device"] == bed.entry
    assert record["model"] == SPEC == bed.model


def test_a_slower_link_shows_in_the_trace(bed: Testbed, lenet) -> None:
    _, x, _ = lenet
    with connect(bed.entry) as client:
        client.infer(x)  # connections open before the change
        bed.set_link("edge->cloud", rtt_ms=200)
        try:
            slow = client.infer(x)
        finally:
            bed.set_link(1, rtt_ms=1)

    assert slow.trace is not None
    assert slow.trace.links[1].transfer_ms >= 190


def test_tritonclient_gets_the_right_answer_from_the_entry(
    bed: Testbed, artifact: Manifest, lenet
) -> None:
    grpcclient = pytest.importorskip("tritonclient.grpc")
    _, x, expected = lenet
    client = grpcclient.InferenceServerClient(bed.entry)
    try:
        name = client.get_model_metadata(bed.model).inputs[0].name
        tensor = grpcclient.InferInput(name, list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        assert client.is_server_ready() and client.is_model_ready(bed.model)
        result = client.infer(bed.model, [tensor], client_timeout=30)
        output = artifact.segment("cloud").outputs[0].name
        np.testing.assert_allclose(result.as_numpy(output), expected, rtol=1e-4, atol=1e-4)
    finally:
        client.close()


def test_a_call_without_a_deadline_crosses_every_tier(
    bed: Testbed, artifact: Manifest, lenet
) -> None:
    grpcclient = pytest.importorskip("tritonclient.grpc")
    _, x, expected = lenet
    client = grpcclient.InferenceServerClient(bed.entry)
    try:
        name = client.get_model_metadata(bed.model).inputs[0].name
        tensor = grpcclient.InferInput(name, list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer(bed.model, [tensor])  # no client_timeout: no gRPC deadline
        output = artifact.segment("cloud").outputs[0].name
        np.testing.assert_allclose(result.as_numpy(output), expected, rtol=1e-4, atol=1e-4)
    finally:
        client.close()


def test_the_entry_metadata_names_the_final_output_computed_upstream(
    bed: Testbed, artifact: Manifest
) -> None:
    grpcclient = pytest.importorskip("tritonclient.grpc")
    client = grpcclient.InferenceServerClient(bed.entry)
    try:
        outputs = client.get_model_metadata(bed.model).outputs
    finally:
        client.close()
    final = artifact.segment("cloud").outputs[0]
    assert [o.name for o in outputs] == [final.name]
    assert outputs[0].datatype == "FP32"


def test_without_emulation_tiers_call_each_other_directly(artifact: Manifest, lenet) -> None:
    _, x, expected = lenet
    with Testbed(three_tiers(), artifact.root, emulate=False) as direct:
        with connect(direct.entry) as client:
            result = client.infer(x)
        assert direct.link_stats() == {}
        pids = direct.tier_pids.values()

    np.testing.assert_allclose(result.output, expected, rtol=1e-4, atol=1e-4)
    assert result.trace is not None and result.trace.tier_names == NAMES
    assert not any(alive(pid) for pid in pids)


def test_killing_the_middle_tier_accounts_for_every_request(artifact: Manifest, lenet) -> None:
    _, x, expected = lenet
    total, kill_after = 1000, 200
    done = threading.Semaphore(0)
    with Testbed(three_tiers(), artifact.root) as running:
        pids = running.tier_pids
        groups = {name: cpu_cgroup(pid) for name, pid in pids.items()}
        with connect(running.entry, timeout_s=10) as client, ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(client.infer, x) for _ in range(total)]
            for future in futures:
                future.add_done_callback(lambda _: done.release())
            for _ in range(kill_after):
                assert done.acquire(timeout=60), "requests stalled before the kill"
            running.kill_tier("edge")
            finished, pending = wait(futures, timeout=120)
        stopped_at = time.monotonic()

    assert not pending, f"{len(pending)} requests hung"
    results, errors, unexpected = 0, 0, []
    for future in finished:
        error = future.exception()
        if error is None:
            np.testing.assert_allclose(future.result().output, expected, rtol=1e-4, atol=1e-4)
            results += 1
        elif isinstance(error, ServiceError) and error.status == "UNAVAILABLE":
            assert "'edge'" in str(error), str(error)
            errors += 1
        else:
            unexpected.append(repr(error))
    assert not unexpected, unexpected[:3]
    assert results + errors == total
    assert results >= kill_after and errors > 0
    assert time.monotonic() - stopped_at < 30
    assert_nothing_left(pids, groups)


def assert_nothing_left(pids: dict[str, int], groups: dict[str, str]) -> None:
    """No tier process runs and no cgroup of a throttled tier remains (when cgroups work)."""
    assert not any(alive(pid) for pid in pids.values())
    if CGROUP_MISSING is not None:
        return
    root = cpu.cpu_controller_root()
    assert root is not None
    throttled = {name for name, path in groups.items() if "/tierflow/" in path}
    assert throttled == {"device", "edge"}  # the cloud's speed 2 cannot be emulated
    assert not [p for n in throttled if (p := root / groups[n].lstrip("/")).exists()]


def test_a_tier_that_cannot_start_is_reported_and_nothing_is_left(
    tmp_path: Path, artifact: Manifest
) -> None:
    copy = tmp_path / "tampered"
    shutil.copytree(artifact.root, copy)
    cloud_file = copy / load_manifest(copy).segment("cloud").files[0].path
    cloud_file.write_bytes(cloud_file.read_bytes() + b"\0")
    bed = Testbed(three_tiers(), copy, log_dir=tmp_path / "logs")

    with pytest.raises(TestbedError) as caught:
        bed.start()

    assert "'cloud'" in str(caught.value) and str(cloud_file) in str(caught.value)
    with pytest.raises(TestbedError, match="not running"):
        _ = bed.entry
    assert not processes_mentioning(str(copy))


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def test_a_topology_that_is_not_the_plans_is_refused(artifact: Manifest) -> None:
    other = topology_from_dict(
        {
            "tiers": [
                {"name": "a", "kind": "device", "compute": {"speed": 1}},
                {"name": "b", "kind": "cloud", "compute": {"speed": 1}},
            ],
            "links": [{"from": "a", "to": "b", "bandwidth_mbps": 10, "rtt_ms": 1}],
        }
    )

    with pytest.raises(TestbedError, match="differ from the tiers"):
        Testbed(other, artifact.root).start()
