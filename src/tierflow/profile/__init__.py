"""Per-node latency: measuring it on this host, estimating it, and scaling it to tiers.

Names resolve on first use (Note [Lazy public names] in :mod:`tierflow`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tierflow._lazy import lazy_names

if TYPE_CHECKING:
    from tierflow.profile.estimate import NOMINAL_HOST_GFLOPS, estimate_profile
    from tierflow.profile.measure import default_threads, profile_model
    from tierflow.profile.profile import Profile
    from tierflow.profile.tier_latency import tier_latency_ms

_LAZY = {
    "NOMINAL_HOST_GFLOPS": "tierflow.profile.estimate",
    "estimate_profile": "tierflow.profile.estimate",
    "default_threads": "tierflow.profile.measure",
    "profile_model": "tierflow.profile.measure",
    "Profile": "tierflow.profile.profile",
    "tier_latency_ms": "tierflow.profile.tier_latency",
}


lazy_names(__name__, _LAZY)


__all__ = [
    "NOMINAL_HOST_GFLOPS",
    "Profile",
    "default_threads",
    "estimate_profile",
    "profile_model",
    "tier_latency_ms",
]
