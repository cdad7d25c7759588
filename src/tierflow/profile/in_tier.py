"""Profiling a model inside a tier's emulated compute budget.

On the testbed a tier runs under a CPU quota matching its ``speed``; its profile is
measured under that same quota and thread count, not computed by dividing the host
profile, so the planner sees what the tier process will really do.

Note [Throttled profiles]
    Three measurements, each in a child process under the tier's quota:

    1. ``tierflow profile`` gives per-node PyTorch medians: the *shape* of the cost
       across nodes. (Under a CFS quota a node is now and then stalled until the next
       period; per-node medians leave those rare stalls out, so they add up short.)
    2. The whole model built for ONNX Runtime and served by ``tierflow serve``, timed
       from outside the quota: what one request really costs that tier, compute and
       service stack together.
    3. A sink service (no model) with an input-sized request: the service stack alone
       (``service_ms``, which the cost model charges whenever the tier is on the path).

    Node times are scaled so that they sum to (2) − (3); the planner adds (3) back.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np

from tierflow.errors import ProfileError
from tierflow.profile.profile import Profile
from tierflow.testbed.cpu import CpuQuota, cpu_limited
from tierflow.topology.schema import Topology

ProfiledExecutor = Literal["torch", "onnx"]  # what the node times are calibrated to


def _profile_child(
    spec: str, tier: str, speed: float, threads: int, *, runs: int, warmup: int,
    input_shape: str | None, timeout_s: float,
) -> tuple[Profile, str | None]:  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "profile.json"
        args = [
            sys.executable, "-m", "tierflow", "profile", spec,
            "--out", str(out), "--threads", str(threads), "--machine", tier,
            "--runs", str(runs), "--warmup", str(warmup), "--json",
        ]  # fmt: skip
        if input_shape is not None:
            args += ["--input-shape", input_shape]
        with cpu_limited(
            args, speed=speed, name=f"profile-{tier}", stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, defer_until_ready=True,
        ) as child:  # fmt: skip
            try:
                _, stderr = child.process.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                raise ProfileError(
                    f"profiling {spec} on tier {tier!r} took over {timeout_s:.0f} s"
                ) from None
            if child.process.returncode != 0:
                tail = "\n".join(str(stderr).strip().splitlines()[-5:])
                raise ProfileError(f"profiling {spec} on tier {tier!r} failed:\n{tail}")
            return Profile.load(out), child.reason


def _served_whole_ms(
    spec: str, tier: str, speed: float, threads: int, *, input_shape: str | None
) -> tuple[float, int]:
    """Mean latency of the whole model served as one ONNX tier at ``speed`` (Note [mean
    under a CPU quota] in :mod:`tierflow.measure.service_probe`)."""
    # Imported here: building and serving pull in the runtime, which profiling alone
    # does not need.
    from tierflow.artifacts import build
    from tierflow.graph import capture
    from tierflow.measure.service_probe import time_served
    from tierflow.models import resolve_model
    from tierflow.plan.planner import plan
    from tierflow.profile.estimate import estimate_profile
    from tierflow.topology.load import topology_from_dict

    shape = None if input_shape is None else [int(d) for d in input_shape.split(",")]
    model, inputs = resolve_model(spec, input_shape=shape)
    graph = capture(model, inputs, name=spec)
    alone = topology_from_dict(
        {"tiers": [{"name": tier, "kind": "device", "compute": {"speed": speed}}]}
    )
    whole = plan(graph, alone, profile=estimate_profile(graph))
    with tempfile.TemporaryDirectory() as folder:
        manifest = build(model, whole, inputs, Path(folder), executor="onnx")
        name = manifest.segments[0].inputs[0].name
        request = {name: np.asarray(inputs[0].detach().numpy())}
        args = [
            sys.executable, "-m", "tierflow", "serve", "--manifest",
            str(Path(folder) / "manifest.json"), "--tier", tier,
            "--listen", "127.0.0.1:0", "--threads", str(threads),
        ]  # fmt: skip
        ms, _ = time_served(args, speed=speed, model=spec, request=request)
    return ms, int(request[name].nbytes)


def profile_in_tier(
    spec: str,
    topology: Topology,
    tier: str,
    *,
    executor: ProfiledExecutor = "onnx",
    runs: int = 15,
    warmup: int = 3,
    input_shape: str | None = None,
    timeout_s: float = 900.0,
) -> Profile:
    """Measure ``spec``'s per-node latency throttled like ``tier`` (Note [Throttled profiles]).

    With ``executor="onnx"`` (what tier services run) node times are calibrated to the
    served model; with ``"torch"`` they are the PyTorch medians. Where cgroups are
    unavailable everything runs unthrottled, and the profile's meta says why.
    """
    from tierflow.measure.service_probe import measure_service_ms

    the_tier = topology.tier(tier)
    if the_tier.compute.speed is None:
        raise ProfileError(
            f"tier {tier!r} has a measured profile ({the_tier.compute.profile}); nothing to emulate"
        )
    speed = the_tier.compute.speed
    quota = CpuQuota.for_speed(speed)
    profile, reason = _profile_child(
        spec, tier, speed, quota.threads, runs=runs, warmup=warmup,
        input_shape=input_shape, timeout_s=timeout_s,
    )  # fmt: skip
    meta = {
        **profile.meta,
        "tier_speed": speed,
        "throttled": reason is None,
        "quota_us": quota.quota_us,
        "period_us": quota.period_us,
        "sum_over_whole_measured": profile.sum_over_whole,
    }
    if reason is not None:
        meta["unthrottled_because"] = reason
    node_ms = dict(profile.node_ms)
    whole_ms = profile.whole_ms
    if executor == "onnx":
        served_ms, input_bytes = _served_whole_ms(
            spec, tier, speed, quota.threads, input_shape=input_shape
        )
        service_ms = measure_service_ms(speed, input_bytes=input_bytes)
        compute_ms = max(served_ms - service_ms, 0.05 * served_ms)
        scale = compute_ms / profile.sum_ms if profile.sum_ms > 0 else 1.0
        node_ms = {name: ms * scale for name, ms in node_ms.items()}
        whole_ms = compute_ms
        meta.update(
            executor="onnxruntime",
            served_whole_ms=served_ms,
            service_ms=service_ms,
            torch_whole_ms=profile.whole_ms,
        )
    return Profile(
        model=profile.model,
        machine=tier,
        threads=profile.threads,
        runs=profile.runs,
        node_ms=node_ms,
        whole_ms=whole_ms,
        meta=meta,
    )
