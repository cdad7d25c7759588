"""CPU-limited tier processes: a cgroup v1 CFS quota matching the tier's relative speed."""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from tierflow.errors import TestbedError
from tierflow.testbed import cpu
from tierflow.testbed.cpu import CpuQuota, cpu_limited

CGROUP_MISSING = cpu.unavailable_reason()
needs_cgroup = pytest.mark.skipif(CGROUP_MISSING is not None, reason=str(CGROUP_MISSING))

# A fixed amount of pure-Python work split over one worker process per host core. It
# reports its wall time and each worker's CPU time, measured after the pool has started.
WORK = """
import json, multiprocessing, os, sys, time

def spin(n):
    start = time.process_time()
    total = 0
    for i in range(n):
        total += i
    return time.process_time() - start

if __name__ == "__main__":
    with multiprocessing.Pool(os.cpu_count()) as pool:
        pool.map(spin, [1] * os.cpu_count())
        start = time.perf_counter()
        cpu_s = pool.map(spin, [int(sys.argv[1])] * os.cpu_count())
        print(json.dumps({"wall_s": time.perf_counter() - start, "cpu_s": cpu_s}))
"""


def run_work(speed: float, iterations: int) -> tuple[dict[str, float | list[float]], Path | None]:
    with cpu_limited(
        [sys.executable, "-c", WORK, str(iterations)], speed=speed, stdout=subprocess.PIPE
    ) as tier:
        out, _ = tier.process.communicate(timeout=120)
        return json.loads(out), tier.cgroup


def test_quota_is_speed_times_host_capacity_over_a_short_period() -> None:
    quota = CpuQuota.for_speed(0.25, cores=8)
    assert (quota.period_us, quota.quota_us, quota.threads) == (10_000, 20_000, 2)


def test_tiny_speeds_are_raised_to_the_kernel_minimum_quota() -> None:
    assert CpuQuota.for_speed(0.001, cores=2).quota_us == 1_000


def test_speeds_at_or_above_the_host_run_unthrottled_on_every_core() -> None:
    quota = CpuQuota.for_speed(2.0, cores=4)
    assert (quota.quota_us, quota.threads) == (None, 4)


def test_a_non_positive_speed_is_rejected() -> None:
    with pytest.raises(TestbedError, match="speed"):
        CpuQuota.for_speed(0)


def test_a_faster_than_host_tier_runs_unthrottled_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="tierflow.testbed.cpu"),
        cpu_limited([sys.executable, "-c", "pass"], speed=3.0) as tier,
    ):
        assert tier.process.wait(30) == 0
    assert tier.cgroup is None
    assert "faster than this host" in caplog.text


def test_without_cgroups_the_tier_runs_unthrottled_and_the_log_names_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(cpu, "unavailable_reason", lambda: "not root (test)")
    with (
        caplog.at_level(logging.WARNING, logger="tierflow.testbed.cpu"),
        cpu_limited([sys.executable, "-c", "pass"], speed=0.5) as tier,
    ):
        assert tier.process.wait(30) == 0
    assert (tier.cgroup, tier.reason) == (None, "not root (test)")
    assert "not root (test)" in caplog.text


def test_thread_pools_are_capped_at_the_suggested_thread_count() -> None:
    script = "import os; print(os.environ['OMP_NUM_THREADS'])"
    with cpu_limited([sys.executable, "-c", script], speed=0.01, stdout=subprocess.PIPE) as tier:
        out, _ = tier.process.communicate(timeout=30)
    assert out.decode().strip() == "1"


@pytest.mark.serial
@needs_cgroup
def test_a_quarter_speed_tier_takes_four_times_as_long() -> None:
    # The reference is the work's CPU time per core: how long it takes on this host when
    # idle. Other jobs on a shared machine would stretch an unthrottled wall time, but
    # not its CPU time; the throttled run needs only a quarter of the host.
    ratios = []
    for _ in range(3):
        unthrottled, _ = run_work(1.0, 5_000_000)
        throttled, group = run_work(0.25, 5_000_000)
        assert isinstance(unthrottled["cpu_s"], list)
        assert isinstance(throttled["wall_s"], float)
        ratios.append(throttled["wall_s"] / max(unthrottled["cpu_s"]))
        assert group is not None
        assert not group.exists()
    assert 3.0 <= statistics.median(ratios) <= 5.5


@needs_cgroup
def test_the_cgroup_is_removed_when_the_block_ends_with_the_tier_still_running() -> None:
    # The tier forks a busy grandchild, which the cleanup must find in the cgroup too.
    busy = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'while 1: pass'])\n"
        "print('forked', flush=True)\n"
        "time.sleep(60)\n"
    )
    with cpu_limited([sys.executable, "-c", busy], speed=0.5, stdout=subprocess.PIPE) as tier:
        assert tier.process.stdout is not None
        assert tier.process.stdout.readline() == b"forked\n"
        assert tier.cgroup is not None
        assert len((tier.cgroup / "cgroup.procs").read_text().split()) == 2
        assert (tier.cgroup / "cpu.cfs_quota_us").read_text().strip() == str(tier.quota.quota_us)
        tier.process.stdout.close()
    assert tier.process.returncode is not None
    assert not tier.cgroup.exists()
