"""The public API is what `tierflow.__all__` says, and every name in it exists."""

from __future__ import annotations

import tierflow

EXPECTED = {
    "ArtifactError", "AsyncClient", "CaptureError", "Client", "Cut", "InfeasiblePlanError",
    "LayerGraph", "LayerNode", "Link", "ModelSpecError", "Objective", "PartitionError", "Plan",
    "PlanError", "Prediction", "Profile", "ProfileError", "Result", "Segment", "ServiceError",
    "SplitModel", "TensorSpec", "TestbedError", "Tier", "TierflowError", "Topology",
    "TopologyError", "WireError", "__version__", "capture", "connect", "load_topology", "plan",
    "profile_model", "resolve_model", "run_split", "split", "trace",
    # early exits, training and data; errors of the exit, fusion and compression work
    "CodecError", "CompressionError", "DatasetError", "ExitError", "ExitModel", "ExitOptions",
    "ExitPolicy", "FusionError", "TrainingError", "load_dataset", "load_exit_model",
    "plan_with_exits", "train_run",
    # compression: the planner's options and the compression-aware planner
    "CodecOptions", "VariantOptions", "plan_compressed",
}  # fmt: skip


def test_public_names_are_pinned():
    assert set(tierflow.__all__) == EXPECTED


def test_every_public_name_resolves():
    for name in tierflow.__all__:
        assert getattr(tierflow, name) is not None, name


def test_every_error_derives_from_tierflow_error():
    errors = [getattr(tierflow, n) for n in tierflow.__all__ if n.endswith("Error")]
    assert all(issubclass(e, tierflow.TierflowError) for e in errors)
