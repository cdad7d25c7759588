"""Per-tier profiles for testbed planning, measured inside each tier's budget and cached."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch

from tierflow.profile.in_tier import ProfiledExecutor, profile_in_tier
from tierflow.profile.profile import Profile
from tierflow.topology.schema import Topology

# Bumped when the way a tier is profiled changes, so that older cached profiles are not
# reused: 2 = served latencies are means, not medians (Note [mean under a CPU quota]).
_METHOD = 2


def _cache_key(spec: str, speed: float, executor: str, runs: int, input_shape: str | None) -> str:
    # A cached profile is only valid for the same model, budget, executor and software.
    identity = json.dumps(
        [spec, speed, executor, runs, input_shape, torch.__version__, _METHOD], sort_keys=True
    )
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def tier_profiles(
    spec: str,
    topology: Topology,
    *,
    cache_dir: Path,
    executor: ProfiledExecutor = "onnx",
    runs: int = 10,
    input_shape: str | None = None,
    on_tier: Callable[[str, bool], None] | None = None,
) -> dict[str, Profile]:
    """Profile ``spec`` once per tier (throttled child process), reusing cached results.

    Tiers whose topology entry names a measured profile file use that file. ``on_tier``
    is told each tier name and whether it came from the cache (for progress output).
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    profiles: dict[str, Profile] = {}
    for tier in topology.tiers:
        if tier.compute.profile is not None:
            profiles[tier.name] = Profile.load(tier.compute.profile)
            continue
        assert tier.compute.speed is not None
        path = cache_dir / (
            f"{tier.name}-{_cache_key(spec, tier.compute.speed, executor, runs, input_shape)}.json"
        )
        cached = path.exists()
        if on_tier is not None:
            on_tier(tier.name, cached)
        if cached:
            profiles[tier.name] = Profile.load(path)
            continue
        profile = profile_in_tier(
            spec, topology, tier.name, executor=executor, runs=runs, input_shape=input_shape
        )
        profile.save(path)
        profiles[tier.name] = profile
    return profiles
