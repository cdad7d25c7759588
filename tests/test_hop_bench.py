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
from tierflow.measure.hop_bench import HopTiming, RawClient, run_hop_bench, server_process
from tierflow.runtime.client import connect


@pytest.fixture(scope="module")
def identity_server() -> Iterator[tuple[str, int, str]]:
    """(identity tier address, raw echo port, address of a relay tier in front of it)."""
    with server_process(None) as (address, echo_port), server_process(address) as (relay, _):
        assert echo_port is not None
        yield address, echo_port, relay


def test_the_raw_tcp_echo_returns_the_bytes_it_was_sent(identity_server):
    x = np.random.default_rng(1).standard_normal(25_000, dtype=np.float32)
    raw = RawClient(identity_server[1])
    try:
        y = raw.round_trip(x)
    finally:
        raw.close()
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


def test_sizes_that_are_not_whole_float32_tensors_are_refused():
    with pytest.raises(ValueError, match="multiples of 4"):
        run_hop_bench([4001])


def test_the_verdicts_name_each_target_the_sizes_cover():
    fast = HopTiming(100_000, 10, 0.1, 0.2, 0.5, 0.6)
    slow = HopTiming(10_000_000, 10, 6.0, 7.0, 20.0, 25.0)
    lines = target_lines([fast, slow])
    assert lines[0].startswith("added ≤ 1.0 ms up to 100 KB: met")
    assert lines[1].startswith("throughput ≥ 70% of raw TCP at 10 MB: MISSED (30%)")
