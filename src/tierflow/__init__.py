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

Importing :mod:`tierflow` is cheap: the public names resolve on first use (PEP 562); see
Note [Lazy public names].

Note [Lazy public names]
    ``import tierflow`` used to import every subpackage, PyTorch and torchvision
    included: 2.8 s on the development machine before ``tierflow serve`` could start,
    paid by every tier process the testbed starts. The names below are now imported on
    first access (:mod:`tierflow._lazy`), so a tier that serves ONNX segments never loads
    PyTorch. A public name spelled like a submodule (``tierflow.plan`` the function and
    the subpackage, ``tierflow.graph.capture``, ``tierflow.artifacts.build``) stays the
    public object whatever is imported later, as it was with eager imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tierflow._lazy import lazy_names
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

if TYPE_CHECKING:
    from tierflow.data import load_dataset
    from tierflow.exits import ExitModel, ExitPolicy
    from tierflow.graph import LayerGraph, LayerNode, TensorSpec, capture, trace
    from tierflow.models import resolve_model
    from tierflow.partition import Segment, SplitModel, run_split
    from tierflow.partition.from_plan import split
    from tierflow.plan import Cut, Objective, Plan, Prediction, plan_with_exits
    from tierflow.plan.codec_options import CodecOptions
    from tierflow.plan.exit_options import ExitOptions
    from tierflow.plan.planner import plan
    from tierflow.plan.variant_options import VariantOptions
    from tierflow.plan.variant_planner import plan_compressed
    from tierflow.profile import Profile, profile_model
    from tierflow.runtime.client import AsyncClient, Client, Result, connect
    from tierflow.topology import Link, Tier, Topology, load_topology
    from tierflow.train import load_exit_model, train_run

# Public name -> the module that defines it (Note [Lazy public names]).
_LAZY = {
    "load_dataset": "tierflow.data",
    "ExitModel": "tierflow.exits",
    "ExitPolicy": "tierflow.exits",
    "LayerGraph": "tierflow.graph.layer_graph",
    "LayerNode": "tierflow.graph.layer_graph",
    "TensorSpec": "tierflow.graph.layer_graph",
    "capture": "tierflow.graph.capture",
    "trace": "tierflow.graph.trace",
    "resolve_model": "tierflow.models.resolve",
    "Segment": "tierflow.partition",
    "SplitModel": "tierflow.partition",
    "run_split": "tierflow.partition",
    "split": "tierflow.partition.from_plan",
    "Cut": "tierflow.plan.plan",
    "Plan": "tierflow.plan.plan",
    "Objective": "tierflow.plan.objective",
    "Prediction": "tierflow.plan.evaluate",
    "plan": "tierflow.plan.planner",
    "plan_with_exits": "tierflow.plan.exit_planner",
    "CodecOptions": "tierflow.plan.codec_options",
    "ExitOptions": "tierflow.plan.exit_options",
    "VariantOptions": "tierflow.plan.variant_options",
    "plan_compressed": "tierflow.plan.variant_planner",
    "Profile": "tierflow.profile.profile",
    "profile_model": "tierflow.profile",
    "AsyncClient": "tierflow.runtime.client",
    "Client": "tierflow.runtime.client",
    "Result": "tierflow.runtime.client",
    "connect": "tierflow.runtime.client",
    "Link": "tierflow.topology.schema",
    "Tier": "tierflow.topology.schema",
    "Topology": "tierflow.topology.schema",
    "load_topology": "tierflow.topology",
    "load_exit_model": "tierflow.train",
    "train_run": "tierflow.train",
}


lazy_names(__name__, _LAZY)


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
