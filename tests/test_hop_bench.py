"""``tierflow bench-hop``: raw TCP and tier round trips over real loopback sockets.

No timing thresholds here: the figures depend on the machine (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tierflow.cli.commands_hop import target_lines
from tierflow.measure.hop_bench import (
    GrpcEchoClient,
    HopTiming,
    RawClient,
    hop_report,
    run_hop_bench,
    server_process,
)
from tierflow.runtime.client import connect


@pytest.fixture(scope="module")
def identity_server() -> Iterator[tuple[str, int, str, str]]:
    """(identity tier address, raw echo port, relay tier address in front, gRPC echo address)."""
    with (
        server_process(None) as (address, echo_port, grpc_echo),
        server_process(address) as (relay, no_port, no_echo),
    ):
        assert echo_port is not None and grpc_echo is not None
        assert no_port is None and no_echo is None  # the echoes run beside the identity tier
        yield address, echo_port, relay, grpc_echo


def test_the_raw_tcp_echo_returns_the_bytes_it_was_sent(identity_server):
    x = np.random.default_rng(1).standard_normal(25_000, dtype=np.float32)
    raw = RawClient(identity_server[1])
    try:
        y = raw.round_trip(x)
    finally:
        raw.close()
    np.testing.assert_array_equal(y, x)


def test_the_grpc_echo_returns_the_bytes_it_was_sent(identity_server):
    x = np.random.default_rng(4).standard_normal(25_000, dtype=np.float32)
    echo = GrpcEchoClient(identity_server[3])
    try:
        y = echo.round_trip(x)
    finally:
        echo.close()
    np.testing.assert_array_equal(y, x)


def test_the_identity_tier_returns_its_input(identity_server):
    x = np.random.default_rng(2).standard_normal(1_000, dtype=np.float32)
    with connect(identity_server[0]) as client:
        y = client.infer({"x": x}).output
    np.testing.assert_array_equal(y, x)


def test_the_relay_tier_forwards_to_the_identity_tier_and_back(identity_server):
    x = np.random.default_rng(3).standard_normal(1_000, dtype=np.float32)
    with connect(identity_server[2]) as client:
        result = client.infer({"x": x})
    np.testing.assert_array_equal(result.output, x)
    assert result.trace is not None
    assert [hop.tier for hop in result.trace.tiers] == ["relay", "identity"]


def test_bench_hop_runs_end_to_end_and_reports_positive_times(tmp_path: Path):
    # Act: the real console command, one small size and few rounds (relay: tested above).
    result = subprocess.run(
        [sys.executable, "-m", "tierflow", "bench-hop", "--sizes", "4000", "--repeats", "3",
         "--warmup", "1", "--no-relay", "--out", str(tmp_path), "--json"],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    # Assert
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == json.loads((tmp_path / "hop.json").read_text())
    (size,) = report["sizes"]
    assert size["bytes"] == 4000 and size["samples"] == 3
    for key in ("raw_p50_ms", "raw_p95_ms", "tier_p50_ms", "tier_p95_ms", "raw_mbps", "tier_mbps"):
        assert size[key] > 0, key
    assert size["added_ms"] == pytest.approx(size["tier_p50_ms"] - size["raw_p50_ms"], abs=1e-3)
    assert size["throughput_ratio"] == pytest.approx(
        size["raw_p50_ms"] / size["tier_p50_ms"], rel=1e-2
    )
    # The gRPC echo ceiling is timed by default; the client allocator setting is recorded.
    assert size["echo_p50_ms"] > 0 and size["echo_p95_ms"] > 0
    assert size["echo_ratio"] == pytest.approx(size["raw_p50_ms"] / size["echo_p50_ms"], rel=1e-2)
    assert isinstance(report["client_allocator_tuned"], bool)


def test_the_report_leaves_out_what_was_not_measured():
    timing = HopTiming(4_000, 3, 0.1, 0.2, 0.5, 0.6)
    (size,) = hop_report([timing])["sizes"]
    assert "client_allocator_tuned" not in hop_report([timing])
    assert not {"relay_p50_ms", "echo_p50_ms", "echo_ratio"} & set(size)
    assert timing.echo_ratio is None
    echoed = HopTiming(4_000, 3, 0.1, 0.2, 0.5, 0.6, echo_p50_ms=0.4, echo_p95_ms=0.5)
    assert echoed.echo_ratio == pytest.approx(0.25)
    assert hop_report([echoed], client_allocator_tuned=False)["client_allocator_tuned"] is False


def test_sizes_that_are_not_whole_float32_tensors_are_refused():
    with pytest.raises(ValueError, match="multiples of 4"):
        run_hop_bench([4001])


def test_the_verdicts_name_each_target_the_sizes_cover():
    fast = HopTiming(100_000, 10, 0.1, 0.2, 0.5, 0.6)
    slow = HopTiming(10_000_000, 10, 6.0, 7.0, 20.0, 25.0)
    lines = target_lines([fast, slow])
    assert lines[0].startswith("added ≤ 1.0 ms up to 100 KB: met")
    assert lines[1].startswith("throughput ≥ 70% of raw TCP at 10 MB: MISSED (30%)")
