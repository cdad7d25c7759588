"""The link emulator: a transparent relay that imposes bandwidth, delay, jitter, outages.

The accuracy tests hold the emulator to the testbed's acceptance criterion (bandwidth
within ±10 %, delay within ±2 ms). They measure on loopback with payloads large enough
that the emulated link, not the machine, sets the pace, and take medians of repeats.
Every other timing assertion here is a lower bound, which a slow machine cannot break.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from tierflow.errors import TestbedError
from tierflow.testbed import EmulatedLink, LinkParams, control_request
from tierflow.testbed.probe import median_round_trip_s, recv_exactly, serve, upload_s
from tierflow.testbed.shaping import Transmitter
from tierflow.topology.schema import Link

FAST = LinkParams(bandwidth_mbps=1000)


def echo_once(address: tuple[str, int], payload: bytes, *, timeout_s: float = 10) -> bytes:
    with socket.create_connection(address, timeout=timeout_s) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# --- the timing model -------------------------------------------------------------------


def test_propagation_delay_is_pipelined_not_added_per_chunk() -> None:
    tx = Transmitter()
    params = LinkParams(bandwidth_mbps=8, rtt_ms=100)  # 1 byte per microsecond
    first = tx.send(0.0, 1000, params, downstream=False)
    second = tx.send(0.0, 1000, params, downstream=False)
    assert first == pytest.approx(0.001 + 0.05)
    assert second == pytest.approx(0.002 + 0.05)


def test_downlink_rate_applies_downstream_only() -> None:
    params = LinkParams(bandwidth_mbps=8, downlink_mbps=80)
    assert Transmitter().send(0.0, 1000, params, downstream=False) == pytest.approx(0.001)
    assert Transmitter().send(0.0, 1000, params, downstream=True) == pytest.approx(0.0001)


def test_params_come_from_a_topology_link() -> None:
    link = Link.model_validate({"from": "a", "to": "b", "bandwidth_mbps": 20, "rtt_ms": 5})
    assert LinkParams.from_link(link) == LinkParams(bandwidth_mbps=20, rtt_ms=5)


@pytest.mark.parametrize("changes", [{"bandwidth_mbps": 0}, {"rtt_ms": -1}, {"latency": 3}])
def test_invalid_parameters_are_rejected_by_name(changes: dict[str, float]) -> None:
    with pytest.raises(TestbedError, match=next(iter(changes))):
        FAST.updated(**changes)


# --- a transparent relay ----------------------------------------------------------------


def test_relay_returns_every_byte_in_order_and_forwards_half_close() -> None:
    payload = os.urandom(1_000_000)
    with serve("echo") as echo, EmulatedLink(echo, FAST) as link:
        assert echo_once(link.address, payload) == payload


def test_stats_count_payload_bytes_each_way() -> None:
    with serve("sink") as sink, EmulatedLink(sink, FAST) as link:
        upload_s(link.address, 300_000)
        time.sleep(0.05)  # the handler thread finishes its bookkeeping after the reply
        stats = link.stats()
    assert (stats.bytes_up, stats.bytes_down, stats.connections_opened) == (300_000, 8, 1)


def test_many_concurrent_connections_each_get_their_own_bytes() -> None:
    payloads = [os.urandom(50_000 + i) for i in range(16)]
    results: list[bytes] = [b""] * len(payloads)
    with serve("echo") as echo, EmulatedLink(echo, LinkParams(bandwidth_mbps=200)) as link:

        def client(i: int) -> None:
            results[i] = echo_once(link.address, payloads[i])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(payloads))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == payloads


def test_jitter_never_reorders_bytes_of_a_connection() -> None:
    messages = [i.to_bytes(4, "big") for i in range(300)]
    params = LinkParams(bandwidth_mbps=100, rtt_ms=4, jitter_ms=3)
    with (
        serve("echo") as echo,
        EmulatedLink(echo, params, seed=1) as link,
        socket.create_connection(link.address, timeout=10) as sock,
    ):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for message in messages:
            sock.sendall(message)
        received = recv_exactly(sock, 4 * len(messages))
    assert received == b"".join(messages)


# --- accuracy (the acceptance criterion) --------------------------------------------------


@pytest.mark.serial
@pytest.mark.parametrize("rtt_ms", [10.0, 50.0])
def test_added_round_trip_matches_rtt_within_2_ms(rtt_ms: float) -> None:
    with serve("echo") as echo:
        direct_s = median_round_trip_s(echo)
        with EmulatedLink(echo, LinkParams(bandwidth_mbps=1000, rtt_ms=rtt_ms)) as link:
            via_link_s = median_round_trip_s(link.address, rounds=30)
    assert (via_link_s - direct_s) * 1e3 == pytest.approx(rtt_ms, abs=2.0)


@pytest.mark.serial
@pytest.mark.parametrize(("bandwidth_mbps", "size_bytes"), [(20.0, 2_500_000), (80.0, 5_000_000)])
def test_goodput_matches_bandwidth_within_10_percent(
    bandwidth_mbps: float, size_bytes: int
) -> None:
    with (
        serve("sink") as sink,
        EmulatedLink(sink, LinkParams(bandwidth_mbps=bandwidth_mbps)) as link,
    ):
        elapsed_s = statistics.median(upload_s(link.address, size_bytes) for _ in range(3))
    goodput_mbps = size_bytes * 8 / elapsed_s / 1e6
    assert goodput_mbps == pytest.approx(bandwidth_mbps, rel=0.10)


# --- changes while running ---------------------------------------------------------------


def test_a_delay_set_while_running_applies_to_the_open_connection() -> None:
    with (
        serve("echo") as echo,
        EmulatedLink(echo, FAST) as link,
        socket.create_connection(link.address, timeout=10) as sock,
    ):
        sock.sendall(b"ping")
        recv_exactly(sock, 4)
        link.set(rtt_ms=60)
        start = time.perf_counter()
        sock.sendall(b"ping")
        recv_exactly(sock, 4)
        elapsed_s = time.perf_counter() - start
    assert elapsed_s >= 0.058


def test_a_lower_bandwidth_set_while_running_slows_the_transfer() -> None:
    with serve("sink") as sink, EmulatedLink(sink, FAST) as link:
        link.set(bandwidth_mbps=10)
        elapsed_s = upload_s(link.address, 500_000)
    assert elapsed_s >= 0.38  # 0.4 s of payload at 10 Mbps


def test_concurrent_connections_share_the_link_bandwidth() -> None:
    elapsed: list[float] = []
    with serve("sink") as sink, EmulatedLink(sink, LinkParams(bandwidth_mbps=20)) as link:
        threads = [
            threading.Thread(target=lambda: elapsed.append(upload_s(link.address, 1_000_000)))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert max(elapsed) >= 0.95 * 2_000_000 * 8 / 20e6  # both megabytes crossed one link


def test_an_outage_stalls_open_and_new_connections_until_recovery() -> None:
    with (
        serve("echo") as echo,
        EmulatedLink(echo, FAST) as link,
        socket.create_connection(link.address, timeout=10) as open_sock,
    ):
        link.set(up=False)
        open_sock.sendall(b"held")
        with socket.create_connection(link.address, timeout=10) as new_sock:
            new_sock.sendall(b"new!")
            for sock in (open_sock, new_sock):
                sock.settimeout(0.3)
                with pytest.raises(TimeoutError):
                    sock.recv(4)
                sock.settimeout(10)
            link.set(up=True)
            assert recv_exactly(open_sock, 4) == b"held"
            assert recv_exactly(new_sock, 4) == b"new!"


def test_reset_breaks_open_connections_and_the_link_keeps_serving() -> None:
    with serve("echo") as echo, EmulatedLink(echo, FAST) as link:
        with socket.create_connection(link.address, timeout=10) as sock:
            sock.sendall(b"ping")
            recv_exactly(sock, 4)
            link.reset_connections()
            with pytest.raises((ConnectionError, OSError)):
                sock.sendall(b"x")
                recv_exactly(sock, 4)
        assert echo_once(link.address, b"again") == b"again"


# --- control channel and process entry ----------------------------------------------------


def test_control_channel_reads_and_changes_parameters() -> None:
    with serve("echo") as echo, EmulatedLink(echo, FAST, control=("127.0.0.1", 0)) as link:
        assert link.control_address is not None
        reply = control_request(link.control_address, {"op": "set", "params": {"rtt_ms": 30}})
        state = control_request(link.control_address, {"op": "get"})
    assert reply["params"]["rtt_ms"] == 30
    assert state["params"] == reply["params"]
    assert link.params.rtt_ms == 30
    assert state["stats"]["connections_opened"] == 0


def test_control_channel_names_a_bad_request() -> None:
    with serve("echo") as echo, EmulatedLink(echo, FAST, control=("127.0.0.1", 0)) as link:
        assert link.control_address is not None
        with pytest.raises(TestbedError, match="unknown control op 'jam'"):
            control_request(link.control_address, {"op": "jam"})
        with pytest.raises(TestbedError, match="bandwidth_mbps"):
            control_request(link.control_address, {"op": "set", "params": {"bandwidth_mbps": -1}})


def test_link_runs_as_its_own_process_and_obeys_its_control_port() -> None:
    with serve("echo") as echo:
        command = [
            sys.executable,
            "-m",
            "tierflow.testbed.link",
            "--upstream",
            f"{echo[0]}:{echo[1]}",
            "--bandwidth-mbps",
            "50",
            "--rtt-ms",
            "2",
            "--control",
            "127.0.0.1:0",
        ]
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
            try:
                assert process.stdout is not None
                words = process.stdout.readline().split()  # "listening H:P control H:P"
                host, port = words[1].rsplit(":", 1)
                control_host, control_port = words[3].rsplit(":", 1)
                assert echo_once((host, int(port)), b"hello") == b"hello"
                control = (control_host, int(control_port))
                control_request(control, {"op": "set", "params": {"up": False}})
                state = control_request(control, {"op": "get"})
            finally:
                process.terminate()
                process.wait(10)
    assert state["params"]["up"] is False
    assert state["stats"]["bytes_up"] == 5
    assert process.returncode == 0


def test_grpc_calls_and_streams_cross_the_link_unchanged() -> None:
    grpc = pytest.importorskip("grpc")
    from concurrent import futures

    def reverse(request: bytes, context: object) -> bytes:
        return request[::-1]

    def count(request: bytes, context: object) -> Iterator[bytes]:
        for i in range(int(request)):
            yield str(i).encode()

    handler = grpc.method_handlers_generic_handler(
        "probe.Probe",
        {
            "Reverse": grpc.unary_unary_rpc_method_handler(reverse),
            "Count": grpc.unary_stream_rpc_method_handler(count),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    payload = os.urandom(3_000_000)
    try:
        params = LinkParams(bandwidth_mbps=200, rtt_ms=4)
        with (
            EmulatedLink(("127.0.0.1", port), params) as link,
            grpc.insecure_channel(f"{link.address[0]}:{link.address[1]}") as channel,
        ):
            options = {"timeout": 30}
            reversed_ = channel.unary_unary("/probe.Probe/Reverse")(payload, **options)
            counted = list(channel.unary_stream("/probe.Probe/Count")(b"50", **options))
            stats = link.stats()
    finally:
        server.stop(None)
    assert reversed_ == payload[::-1]
    assert counted == [str(i).encode() for i in range(50)]
    assert stats.bytes_up > len(payload)
