"""Per-node latency: measuring it on this host, estimating it, and scaling it to tiers."""

from tierflow.profile.estimate import NOMINAL_HOST_GFLOPS, estimate_profile
from tierflow.profile.measure import default_threads, profile_model
from tierflow.profile.profile import Profile
from tierflow.profile.tier_latency import tier_latency_ms

__all__ = [
    "NOMINAL_HOST_GFLOPS",
    "Profile",
    "default_threads",
    "estimate_profile",
    "profile_model",
    "tier_latency_ms",
]
