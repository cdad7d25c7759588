"""Slowing a tier process to its topology ``speed`` with a cgroup v1 CPU quota.

A tier with ``compute.speed`` 0.25 computes four times slower than the profiling host.
The testbed runs its process in a cgroup whose CFS quota is ``speed`` of the host's whole
CPU capacity: ``quota = speed * cores * period``. A workload that spreads over
:attr:`CpuQuota.threads` threads (the suggested thread count, ``ceil(speed * cores)``)
then finishes ``1 / speed`` times later than the same workload spread over every core of
the host, which is how profiles are measured.

The CFS period is short (10 ms rather than the kernel's 100 ms) so that a segment of a
few milliseconds is throttled smoothly instead of running at full speed and then
stalling for most of a period. The kernel refuses quotas below 1 ms; smaller ones are
raised to it.

Where the quota cannot be applied (not root, no cgroup v1 ``cpu`` controller mounted,
or its directory not writable) the process runs unthrottled and a warning on the
``tierflow.testbed.cpu`` logger says why; :attr:`LimitedProcess.reason` says the same.
Speeds of 1 or more cannot be emulated (the host is the fastest machine available): the
process runs unthrottled, with a warning for speeds above 1.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierflow.errors import TestbedError

_log = logging.getLogger(__name__)

DEFAULT_PERIOD_US = 10_000
_MIN_QUOTA_US = 1_000  # the kernel's lower bound for cpu.cfs_quota_us
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class CpuQuota:
    """The CFS quota that emulates a relative ``speed`` on a host with ``cores`` cores.

    ``quota_us`` is ``None`` when the tier runs unthrottled (speed of 1 or more).
    """

    speed: float
    cores: int
    period_us: int
    quota_us: int | None
    threads: int

    @classmethod
    def for_speed(
        cls, speed: float, *, cores: int | None = None, period_us: int = DEFAULT_PERIOD_US
    ) -> CpuQuota:
        """The quota for ``speed`` (relative to this host unless ``cores`` is given).

        Examples
        --------
        >>> CpuQuota.for_speed(0.25, cores=8)
        CpuQuota(speed=0.25, cores=8, period_us=10000, quota_us=20000, threads=2)
        """
        if not speed > 0:
            raise TestbedError(f"tier compute.speed must be > 0, got {speed!r}")
        cores = cores or os.cpu_count() or 1
        if speed >= 1:
            return cls(speed, cores, period_us, None, cores)
        quota_us = max(_MIN_QUOTA_US, round(speed * cores * period_us))
        threads = max(1, min(cores, math.ceil(speed * cores)))
        return cls(speed, cores, period_us, quota_us, threads)

    def thread_env(self) -> dict[str, str]:
        """Environment variables that cap OpenMP/BLAS thread pools at :attr:`threads`."""
        return dict.fromkeys(_THREAD_ENV, str(self.threads))


def cpu_controller_root() -> Path | None:
    """Where the cgroup v1 ``cpu`` controller is mounted, or ``None`` if it is not."""
    try:
        mounts = Path("/proc/mounts").read_text()
    except OSError:
        return None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "cgroup" and "cpu" in fields[3].split(","):
            return Path(fields[1])
    return None


def _own_cpu_cgroup(root: Path) -> Path:
    """This process's cgroup in the cpu hierarchy: children are created beneath it."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "cpu" in controllers.split(","):
                candidate = root / path.lstrip("/")
                if candidate.is_dir():
                    return candidate
    return root


def unavailable_reason() -> str | None:
    """Why CPU quotas cannot be applied here, or ``None`` when they can."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "cgroups need Linux"
    if os.geteuid() != 0:
        return "not root (cgroup CPU quotas need root)"
    root = cpu_controller_root()
    if root is None:
        return "the cgroup v1 cpu controller is not mounted (see /proc/mounts)"
    parent = _own_cpu_cgroup(root)
    if not os.access(parent, os.W_OK):
        return f"the cgroup directory {parent} is not writable"
    return None


@dataclass
class LimitedProcess:
    """A running child process and the quota it runs under.

    ``cgroup`` is the cgroup directory (``None`` when unthrottled) and ``reason`` says
    why the process is unthrottled, if it is.
    """

    process: subprocess.Popen[bytes]
    quota: CpuQuota
    cgroup: Path | None
    reason: str | None


@contextlib.contextmanager
def cpu_limited(
    args: Sequence[str],
    *,
    speed: float,
    name: str = "tier",
    period_us: int = DEFAULT_PERIOD_US,
    env: Mapping[str, str] | None = None,
    limit_threads: bool = True,
    stop_timeout_s: float = 5.0,
    defer_until_ready: bool = False,
    **popen: Any,
) -> Iterator[LimitedProcess]:
    """Run ``args`` as a child process slowed to ``speed``; clean up on exit.

    The child joins its cgroup before it executes ``args`` (through ``/bin/sh``), so no
    instruction of it runs unthrottled, and everything it forks stays in the cgroup. On
    leaving the block the child is terminated if still running (killed after
    ``stop_timeout_s``), leftover processes in the cgroup are killed, and the cgroup
    is removed. ``limit_threads`` caps OpenMP/BLAS pools at the suggested thread count
    unless ``env`` sets them. Other keyword arguments go to :class:`subprocess.Popen`.

    With ``defer_until_ready`` the cgroup starts without a quota and the child applies it
    itself by calling :func:`apply_deferred_quota` once it has started up: importing
    torch and loading a model under a 10% quota would take ten times as long, and start-up
    is not what the emulation is about.

    Examples
    --------
    >>> with cpu_limited(["python", "-m", "tierflow.runtime.serve"], speed=0.25) as tier:
    ...     tier.process.wait()  # doctest: +SKIP
    """
    quota = CpuQuota.for_speed(speed, period_us=period_us)
    child_env = dict(os.environ if env is None else env)
    if limit_threads:
        for key, value in quota.thread_env().items():
            child_env.setdefault(key, value)
    reason = _why_unthrottled(quota)
    cgroup = None if reason is not None else _create_cgroup(name, quota)
    if cgroup is not None and defer_until_ready:
        (cgroup / "cpu.cfs_quota_us").write_text("-1")
        child_env[_DEFERRED_QUOTA_ENV] = f"{cgroup / 'cpu.cfs_quota_us'}={quota.quota_us}"
    command = list(args)
    if cgroup is not None:
        # $$ is the shell's pid; exec keeps it, so the command starts inside the cgroup.
        join = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
        command = ["/bin/sh", "-c", join, str(cgroup), *command]
    try:
        process = subprocess.Popen(command, env=child_env, **popen)
    except BaseException:
        if cgroup is not None:
            _remove_cgroup(cgroup)
        raise
    try:
        yield LimitedProcess(process, quota, cgroup, reason)
    finally:
        _stop(process, stop_timeout_s)
        if cgroup is not None:
            _remove_cgroup(cgroup)


_DEFERRED_QUOTA_ENV = "TIERFLOW_DEFERRED_CPU_QUOTA"


def apply_deferred_quota() -> bool:
    """Apply the CPU quota a parent deferred for this process (see :func:`cpu_limited`).

    Call it once start-up is over, right before the work being emulated. Returns whether
    a quota was applied; a process started without a deferred quota is left alone. The
    variable is removed so that processes this one starts do not apply it again.
    """
    setting = os.environ.pop(_DEFERRED_QUOTA_ENV, None)
    if setting is None:
        return False
    path, _, value = setting.rpartition("=")
    Path(path).write_text(value)
    return True


def _why_unthrottled(quota: CpuQuota) -> str | None:
    if quota.quota_us is None:
        if quota.speed > 1:
            faster = f"speed {quota.speed:g} is faster than this host; it runs unthrottled"
            _log.warning("tier CPU speed: %s", faster)
            return faster
        return "speed 1 is this host's own speed"
    missing = unavailable_reason()
    if missing is not None:
        _log.warning(
            "tier CPU speed %g not emulated, running unthrottled: %s", quota.speed, missing
        )
    return missing


def _create_cgroup(name: str, quota: CpuQuota) -> Path:
    root = cpu_controller_root()
    assert root is not None  # checked by unavailable_reason()
    group = _own_cpu_cgroup(root) / "tierflow" / f"{name}-{uuid.uuid4().hex[:8]}"
    try:
        group.mkdir(parents=True)
        (group / "cpu.cfs_period_us").write_text(str(quota.period_us))
        (group / "cpu.cfs_quota_us").write_text(str(quota.quota_us))
    except OSError as error:
        with contextlib.suppress(OSError):
            group.rmdir()
        raise TestbedError(f"cannot set up cgroup {group} for tier {name!r}: {error}") from error
    return group


def _stop(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _remove_cgroup(group: Path) -> None:
    """Kill what is left in ``group`` and remove it (a cgroup with tasks cannot be)."""
    deadline = time.monotonic() + 5.0
    while True:
        with contextlib.suppress(OSError, ValueError):
            for pid in (group / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        try:
            group.rmdir()
        except FileNotFoundError:
            break
        except OSError as error:
            if time.monotonic() > deadline:
                _log.warning("cgroup %s not removed: %s", group, error)
                return
            time.sleep(0.01)
            continue
        break
    with contextlib.suppress(OSError):
        group.parent.rmdir()  # the shared "tierflow" parent, once no tier uses it
