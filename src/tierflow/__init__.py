"""tierflow: plan, split and run DNNs across end devices, edge nodes and the cloud.

The pipeline, one typed artifact to the next::

    resolve_model(spec) → capture(model, inputs) → LayerGraph
    profile_model(...) → Profile        load_topology(path) → Topology
    plan(graph, topology, profile=...) → Plan
    split(model, plan, inputs) → segments;  run_split(segments, *inputs) → output
    tierflow build / serve / up  →  connect(address).infer(x) → Result(output, trace)

    load_dataset(spec) → train_run(backbone, data=..., exits=...) → run dir (exits.json)
    plan_with_exits(graph, topology, ExitOptions.load(...)) → Plan with early exits

    plan_compressed(graph, topology, variants=VariantOptions.load(...),
                    codecs=CodecOptions.load(...)) → Plan with int8 tiers and codecs
"""

from tierflow.data import load_dataset
from tierflow.errors import (
    ArtifactError,
    CaptureError,
    CodecError,
    CompressionError,
    DatasetError,
    ExitError,
    FusionError,
    InfeasiblePlanError,
    ModelSpecError,
    PartitionError,
    PlanError,
    ProfileError,
    ServiceError,
    TestbedError,
    TierflowError,
    TopologyError,
    TrainingError,
    WireError,
)
from tierflow.exits import ExitModel, ExitPolicy
from tierflow.graph import LayerGraph, LayerNode, TensorSpec, capture, trace
from tierflow.models import resolve_model
from tierflow.partition import Segment, SplitModel, run_split
from tierflow.partition.from_plan import split
from tierflow.plan import Cut, Objective, Plan, Prediction, plan, plan_with_exits
from tierflow.plan.codec_options import CodecOptions
from tierflow.plan.exit_options import ExitOptions
from tierflow.plan.variant_options import VariantOptions
from tierflow.plan.variant_planner import plan_compressed
from tierflow.profile import Profile, profile_model
from tierflow.runtime.client import AsyncClient, Client, Result, connect
from tierflow.topology import Link, Tier, Topology, load_topology
from tierflow.train import load_exit_model, train_run

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "AsyncClient",
    "CaptureError",
    "Client",
    "CodecError",
    "CodecOptions",
    "CompressionError",
    "Cut",
    "DatasetError",
    "ExitError",
    "ExitModel",
    "ExitOptions",
    "ExitPolicy",
    "FusionError",
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
    "TrainingError",
    "VariantOptions",
    "WireError",
    "__version__",
    "capture",
    "connect",
    "load_dataset",
    "load_exit_model",
    "load_topology",
    "plan",
    "plan_compressed",
    "plan_with_exits",
    "profile_model",
    "resolve_model",
    "run_split",
    "split",
    "trace",
    "train_run",
]
