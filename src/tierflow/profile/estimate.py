"""An analytic stand-in for a measured profile, computed from FLOP counts alone.

Use it only when nothing has been measured: it ignores memory traffic, operator dispatch
overhead and how well each operator uses the hardware, so it underestimates cheap,
memory-bound operators (reshapes, activations, pooling) and treats every FLOP alike.
Profiles it builds carry ``meta["estimated"] = True`` so that reports can say so.
"""

from __future__ import annotations

from tierflow.errors import ProfileError
from tierflow.graph.layer_graph import LayerGraph
from tierflow.profile.profile import Profile

NOMINAL_HOST_GFLOPS = 100.0
"""The sustained rate assumed for the host when estimating, in GFLOP/s.

An order-of-magnitude figure for PyTorch eager inference on a few cores of a current
x86 desktop or server CPU: torchvision resnet18 (3.6 GFLOP at 224x224, a multiply-add
counting 2) takes 14 ms on two cores of the machine tierflow was developed on, about
260 GFLOP/s, and a laptop core manages 30-60 GFLOP/s. Tier speeds in a topology are
relative to this host, so only the ratios between tiers matter to the planner.
"""


def estimate_profile(graph: LayerGraph, *, gflops: float = NOMINAL_HOST_GFLOPS) -> Profile:
    """Estimate per-node latency as ``flops / rate``, for when no profile was measured.

    Parameters
    ----------
    graph:
        The model graph; ``LayerNode.flops`` supplies the work per node. A block's time
        is split evenly across its members, so that summing members gives it back.
    gflops:
        The host's assumed sustained rate in GFLOP/s (see :data:`NOMINAL_HOST_GFLOPS`).

    Returns
    -------
    Profile
        Machine ``"estimate"``, ``threads`` and ``runs`` 0 (nothing ran), ``whole_ms`` the
        sum of the nodes, and ``meta`` ``{"estimated": True, "gflops": gflops}``.

    Examples
    --------
    >>> from tierflow.graph import capture
    >>> from tierflow.models import resolve_model
    >>> graph = capture(*resolve_model("zoo:lenet"), name="zoo:lenet")
    >>> profile = estimate_profile(graph, gflops=50.0)
    >>> profile.meta["estimated"], profile.node_ms["conv1"] == graph["conv1"].flops / 50e6
    (True, True)
    """
    if not gflops > 0:
        raise ProfileError(f"gflops must be > 0, got {gflops}")
    ms_per_flop = 1e3 / (gflops * 1e9)
    node_ms: dict[str, float] = {}
    for node in graph:
        members = node.members or (node.name,)
        share = node.flops * ms_per_flop / len(members)
        for member in members:
            node_ms[member] = share
    return Profile(
        model=graph.model,
        machine="estimate",
        threads=0,
        runs=0,
        node_ms=node_ms,
        whole_ms=sum(node_ms.values()),
        meta={"estimated": True, "gflops": gflops, "method": "flops / gflops"},
    )
