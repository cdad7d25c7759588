"""How many times faster than the host each tier runs, for work the profiles do not cover.

Exit heads and codecs are timed on the host only; the exit-aware and codec planners scale
those times to each tier with the same speeds.
"""

from __future__ import annotations

import numpy as np

from tierflow.graph.layer_graph import LayerGraph
from tierflow.plan.cost_model import CostModel, FloatArray
from tierflow.profile.estimate import estimate_profile
from tierflow.profile.profile import Profile
from tierflow.topology.schema import Topology


def tier_speeds(
    graph: LayerGraph, topology: Topology, base: CostModel, profile: Profile | None
) -> FloatArray:
    """``[T]`` how many times faster than the host each tier runs.

    A tier with ``compute.speed`` runs ``speed`` times as fast as the host, also when the
    backbone's latency on it comes from a profile measured in the tier (the testbed
    throttles the tier to that speed). A tier described only by a profile gets its speed
    over the whole backbone: Σ_n t(n, k) / Σ_n t_host(n), the host's times from
    ``profile`` or, without one, estimated from FLOPs.
    """
    speeds = np.ones(base.n_tiers)
    host_total: float | None = None
    for k, tier in enumerate(topology.tiers):
        if tier.compute.speed is not None:
            speeds[k] = tier.compute.speed
            continue
        if host_total is None:
            host = profile if profile is not None else estimate_profile(graph)
            host_total = sum(
                host.node_ms[m] for node in graph for m in (node.members or (node.name,))
            )
        tier_total = float(base.compute_ms[:, k].sum())
        speeds[k] = host_total / tier_total if tier_total > 0 else 1.0
    return speeds
