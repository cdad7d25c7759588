"""Artifacts: a plan built into per-tier files (ONNX or safetensors) and a manifest.

``build(model, plan, inputs, out_dir)`` writes them; ``load_manifest(out_dir)`` and
``load_executors(manifest, tier)`` read them back, checking every file's sha256 first;
``run_chain(executors, inputs)`` runs executors in tier order by value name.
A plan's early exits are built with ``build(..., exit_heads={name: head})`` and read back
per tier with ``load_tier_exits(manifest, tier)``.
"""

from tierflow.artifacts.build import ONNX_OPSET, ExecutorChoice, build
from tierflow.artifacts.executors import OnnxExecutor, TorchExecutor, load_executors, run_chain
from tierflow.artifacts.exit_heads import load_tier_exits
from tierflow.artifacts.manifest import (
    ExitEntry,
    FileEntry,
    Manifest,
    SegmentEntry,
    ValueEntry,
    load_manifest,
    plan_digest,
)

__all__ = [
    "ONNX_OPSET",
    "ExecutorChoice",
    "ExitEntry",
    "FileEntry",
    "Manifest",
    "OnnxExecutor",
    "SegmentEntry",
    "TorchExecutor",
    "ValueEntry",
    "build",
    "load_executors",
    "load_manifest",
    "load_tier_exits",
    "plan_digest",
    "run_chain",
]
