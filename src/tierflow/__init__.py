"""tierflow: plan, split and run DNNs across end devices, edge nodes and the cloud.

The pipeline, one typed artifact to the next::

    resolve_model(spec) → capture(model, inputs) → LayerGraph
    profile_model(...) → Profile        load_topology(path) → Topology
    plan(graph, topology, profile=...) → Plan
    split(model, plan, inputs) → segments;  run_split(segments, *inputs) → output
    tierflow build / serve / up  →  connect(address).infer(x) → Result(output, trace)
"""

from tierflow.errors import (
    ArtifactError,
    CaptureError,
    InfeasiblePlanError,
    ModelSpecError,
    PartitionError,
    PlanError,
    ProfileError,
    ServiceError,
    TestbedError,
    TierflowError,
    TopologyError,
    WireError,
)
from tierflow.graph import LayerGraph, LayerNode, TensorSpec, capture, trace
from tierflow.models import resolve_model
from tierflow.partition import Segment, SplitModel, run_split
from tierflow.partition.from_plan import split
from tierflow.plan import Cut, Objective, Plan, Prediction, plan
from tierflow.profile import Profile, profile_model
from tierflow.runtime.client import AsyncClient, Client, Result, connect
from tierflow.topology import Link, Tier, Topology, load_topology

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "AsyncClient",
    "CaptureError",
    "Client",
    "Cut",
    "InfeasiblePlanError",
    "LayerGraph",
    "LayerNode",
    "Link",
    "ModelSpecError",
    "Objective",
    "PartitionError",
    "Plan",
    "PlanError",
    "Prediction",
    "Profile",
    "ProfileError",
    "Result",
    "Segment",
    "ServiceError",
    "SplitModel",
    "TensorSpec",
    "TestbedError",
    "Tier",
    "TierflowError",
    "Topology",
    "TopologyError",
    "WireError",
    "__version__",
    "capture",
    "connect",
    "load_topology",
    "plan",
    "profile_model",
    "resolve_model",
    "run_split",
    "split",
    "trace",
]
