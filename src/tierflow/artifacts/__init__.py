"""Artifacts: a plan built into per-tier files (ONNX or safetensors) and a manifest.

``build(model, plan, inputs, out_dir)`` writes them; ``load_manifest(out_dir)`` and
``load_executors(manifest, tier)`` read them back, checking every file's sha256 first;
``run_chain(executors, inputs)`` runs executors in tier order by value name.
A plan's early exits are built with ``build(..., exit_heads={name: head})`` and read back
per tier with ``load_tier_exits(manifest, tier)``.

Names resolve on first use (Note [Lazy public names] in :mod:`tierflow`): a tier that
loads ONNX segments never imports the build's PyTorch code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tierflow._lazy import lazy_names

if TYPE_CHECKING:
    from tierflow.artifacts.build import ONNX_OPSET, ExecutorChoice, build
    from tierflow.artifacts.executors import OnnxExecutor, load_executors, run_chain
    from tierflow.artifacts.exit_loading import load_tier_exits
    from tierflow.artifacts.manifest import (
        ExitEntry,
        FileEntry,
        Manifest,
        SegmentEntry,
        ValueEntry,
        load_manifest,
        plan_digest,
    )
    from tierflow.artifacts.torch_executor import TorchExecutor

_LAZY = {
    "ONNX_OPSET": "tierflow.artifacts.build",
    "ExecutorChoice": "tierflow.artifacts.build",
    "build": "tierflow.artifacts.build",
    "OnnxExecutor": "tierflow.artifacts.executors",
    "TorchExecutor": "tierflow.artifacts.torch_executor",
    "load_executors": "tierflow.artifacts.executors",
    "run_chain": "tierflow.artifacts.executors",
    "load_tier_exits": "tierflow.artifacts.exit_loading",
    "ExitEntry": "tierflow.artifacts.manifest",
    "FileEntry": "tierflow.artifacts.manifest",
    "Manifest": "tierflow.artifacts.manifest",
    "SegmentEntry": "tierflow.artifacts.manifest",
    "ValueEntry": "tierflow.artifacts.manifest",
    "load_manifest": "tierflow.artifacts.manifest",
    "plan_digest": "tierflow.artifacts.manifest",
}


lazy_names(__name__, _LAZY)


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
