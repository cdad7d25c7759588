"""Profiling a model inside a tier's emulated compute budget.

On the testbed a tier runs under a CPU quota matching its ``speed``; its profile is
measured in a child process under that same quota and thread count, not computed by
dividing the host profile, so the planner sees what the tier process will really do.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

from tierflow.errors import ProfileError
from tierflow.profile.profile import Profile
from tierflow.testbed.cpu import CpuQuota, cpu_limited
from tierflow.topology.schema import Topology

Executor = Literal["torch", "onnx"]


def profile_in_tier(
    spec: str,
    topology: Topology,
    tier: str,
    *,
    executor: Executor = "onnx",
    runs: int = 15,
    warmup: int = 3,
    input_shape: str | None = None,
    timeout_s: float = 900.0,
) -> Profile:
    """Measure ``spec``'s per-node latency in a child process throttled like ``tier``.

    The child runs ``tierflow profile`` under :func:`tierflow.testbed.cpu.cpu_limited`
    with the tier's speed and the quota's thread count; where cgroups are unavailable it
    runs unthrottled, and the profile's meta says so (``throttled: false`` and why).
    """
    the_tier = topology.tier(tier)
    if the_tier.compute.speed is None:
        raise ProfileError(
            f"tier {tier!r} has a measured profile ({the_tier.compute.profile}); nothing to emulate"
        )
    quota = CpuQuota.for_speed(the_tier.compute.speed)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "profile.json"
        args = [
            sys.executable, "-m", "tierflow", "profile", spec,
            "--out", str(out), "--threads", str(quota.threads), "--machine", tier,
            "--executor", executor, "--runs", str(runs), "--warmup", str(warmup), "--json",
        ]  # fmt: skip
        if input_shape is not None:
            args += ["--input-shape", input_shape]
        with cpu_limited(
            args,
            speed=the_tier.compute.speed,
            name=f"profile-{tier}",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        ) as child:
            try:
                _, stderr = child.process.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                raise ProfileError(
                    f"profiling {spec} on tier {tier!r} took over {timeout_s:.0f} s"
                ) from None
            if child.process.returncode != 0:
                tail = "\n".join(str(stderr).strip().splitlines()[-5:])
                raise ProfileError(f"profiling {spec} on tier {tier!r} failed:\n{tail}")
            reason = child.reason
        profile = Profile.load(out)
    node_ms = dict(profile.node_ms)
    measured_ratio = profile.sum_over_whole
    if reason is None and profile.sum_ms > 0:
        # Note [Throttled profiles]: under a CFS quota a node's run is occasionally
        # stalled until the next period. Per-node medians leave those rare stalls out,
        # while the whole-model median includes its share of them, so the medians of a
        # throttled tier add up short (0.6-0.8 of the whole at speed 0.1). The stalls are
        # a tax proportional to CPU time, so node times are scaled to sum to the whole;
        # the measured ratio stays in the meta.
        factor = profile.whole_ms / profile.sum_ms
        node_ms = {name: ms * factor for name, ms in node_ms.items()}
    meta = {
        **profile.meta,
        "tier_speed": the_tier.compute.speed,
        "throttled": reason is None,
        "quota_us": quota.quota_us,
        "period_us": quota.period_us,
        "sum_over_whole_measured": measured_ratio,
    }
    if reason is not None:
        meta["unthrottled_because"] = reason
    return Profile(
        model=profile.model,
        machine=tier,
        threads=profile.threads,
        runs=profile.runs,
        node_ms=node_ms,
        whole_ms=profile.whole_ms,
        meta=meta,
    )
