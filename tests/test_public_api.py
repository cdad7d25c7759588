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


def _imports_torch(code: str) -> bool:
    import subprocess
    import sys

    check = f"{code}\nimport sys\nprint('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=120
    )
    return done.stdout.strip().splitlines()[-1] == "True"


def test_importing_tierflow_and_serving_onnx_need_no_torch():
    # Note [Lazy public names]: a tier process starts without PyTorch.
    assert not _imports_torch("import tierflow")
    assert not _imports_torch(
        "import tierflow.cli.commands_serve, tierflow.runtime.manifest_service\n"
        "from tierflow.cli.app import command_modules\n"
        "assert command_modules(['serve', '--tier', 'x']) == ('commands_serve',)"
    )
    assert _imports_torch("import tierflow\ntierflow.capture")  # resolved on first use


def test_tierflow_plan_stays_the_function_whatever_is_imported():
    import tierflow.plan.plan
    import tierflow.plan.planner

    assert callable(tierflow.plan) and tierflow.plan.__name__ == "plan"
    from tierflow.plan import plan

    assert callable(plan) and plan.__module__ == "tierflow.plan.planner"
