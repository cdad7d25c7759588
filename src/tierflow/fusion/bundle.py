"""Exporting a trained fusion model to per-tier ONNX files, and loading them back verified.

A bundle is a directory: ``device{i}.onnx`` (view → uint8 features), ``edge.onnx``
(stacked uint8 features ``[V, B, D]`` + presence mask ``[V]`` → edge logits + uint8 edge
features), ``cloud.onnx`` (uint8 edge features → logits), ``reference.onnx`` (the
cloud-only raw-offload model), the PyTorch weights as safetensors, and ``fusion.json``
listing every file with its sha256, checked before anything is loaded.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tierflow.errors import FusionError
from tierflow.fusion.model import (
    CloudHead,
    CloudOnlyModel,
    DeviceBranch,
    EdgeFusion,
    FusionModel,
    check_fusion_mode,
    from_uint8,
    to_uint8,
)
from tierflow.fusion.onnx_graph import OnnxGraph

BUNDLE_FILE = "fusion.json"
_FORMAT = "tierflow-fusion/1"
ONNX_OPSET = 17  # as tierflow.artifacts.build: the TorchScript exporter's well-tested opset
VIEW_SHAPE = (1, 14, 14)  # one quadrant of a 28x28 MNIST digit


class _DeviceSegment(nn.Module):
    def __init__(self, branch: DeviceBranch) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, view: torch.Tensor) -> torch.Tensor:
        return to_uint8(torch.sigmoid(self.branch.body(view)))


class _EdgeSegment(nn.Module):
    def __init__(self, edge: EdgeFusion) -> None:
        super().__init__()
        self.edge = edge

    def forward(
        self, features: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, edge_features = self.edge(from_uint8(features), mask)
        return logits, to_uint8(edge_features)


class _CloudSegment(nn.Module):
    def __init__(self, cloud: CloudHead) -> None:
        super().__init__()
        self.cloud = cloud

    def forward(self, edge_features: torch.Tensor) -> torch.Tensor:
        return self.cloud(from_uint8(edge_features))  # type: ignore[no-any-return]


@dataclass(frozen=True)
class FusionBundle:
    """A loaded, verified bundle: its settings and one ONNX graph per tier."""

    root: Path
    views: int
    classes: int
    mode: str
    feature_dim: int
    edge_dim: int
    exit_policy: str
    exit_threshold: float
    devices: tuple[OnnxGraph, ...]
    edge: OnnxGraph
    cloud: OnnxGraph
    reference: OnnxGraph
    info: dict[str, Any]

    def load_model(self) -> FusionModel:
        """The PyTorch fusion model from the bundle's (verified) safetensors weights."""
        model = FusionModel(
            views=self.views,
            classes=self.classes,
            mode=check_fusion_mode(self.mode),
            feature_dim=self.feature_dim,
            edge_dim=self.edge_dim,
        )
        model.load_state_dict(load_file(str(self.root / "fusion.safetensors")))
        return model.eval()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, **names: Any) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter warns that it is deprecated (see artifacts/build.py).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(), args, str(path), opset_version=ONNX_OPSET, dynamo=False, **names
        )


def export_bundle(
    model: FusionModel,
    reference: CloudOnlyModel,
    out: Path,
    *,
    exit_policy: str,
    exit_threshold: float,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` and ``reference`` as a bundle under ``out``; return the JSON's path.

    Examples
    --------
    >>> export_bundle(model, reference, Path("fusion"), exit_policy="entropy",
    ...               exit_threshold=0.8)  # doctest: +SKIP
    """
    out.mkdir(parents=True, exist_ok=True)
    views, batch = model.views, 2
    view = torch.zeros(batch, *VIEW_SHAPE)
    files: dict[str, str] = {}
    for index, branch in enumerate(model.devices):
        name = f"device{index}.onnx"
        _export(
            _DeviceSegment(branch),  # type: ignore[arg-type]  # ModuleList items are branches
            (view,),
            out / name,
            input_names=["view"],
            output_names=["features"],
            dynamic_axes={"view": {0: "batch"}, "features": {0: "batch"}},
        )
        files[f"device{index}"] = name
    _export(
        _EdgeSegment(model.edge),
        (torch.zeros(views, batch, model.feature_dim, dtype=torch.uint8), torch.ones(views)),
        out / "edge.onnx",
        input_names=["features", "mask"],
        output_names=["edge_logits", "edge_features"],
        dynamic_axes={
            "features": {1: "batch"},
            "edge_logits": {0: "batch"},
            "edge_features": {0: "batch"},
        },
    )
    _export(
        _CloudSegment(model.cloud),
        (torch.zeros(batch, model.edge_dim, dtype=torch.uint8),),
        out / "cloud.onnx",
        input_names=["edge_features"],
        output_names=["logits"],
        dynamic_axes={"edge_features": {0: "batch"}, "logits": {0: "batch"}},
    )
    _export(
        reference,
        (torch.zeros(4, batch, *VIEW_SHAPE),),
        out / "reference.onnx",
        input_names=["views"],
        output_names=["logits"],
        dynamic_axes={"views": {1: "batch"}, "logits": {0: "batch"}},
    )
    files.update(edge="edge.onnx", cloud="cloud.onnx", reference="reference.onnx")
    save_file(model.state_dict(), str(out / "fusion.safetensors"))
    save_file(reference.state_dict(), str(out / "reference.safetensors"))
    files.update(weights="fusion.safetensors", reference_weights="reference.safetensors")
    document = {
        "format": _FORMAT,
        "views": views,
        "classes": model.classes,
        "mode": model.mode,
        "feature_dim": model.feature_dim,
        "edge_dim": model.edge_dim,
        "exit_policy": exit_policy,
        "exit_threshold": exit_threshold,
        "files": {key: {"path": p, "sha256": _digest(out / p)} for key, p in files.items()},
        "info": info or {},
    }
    path = out / BUNDLE_FILE
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def load_bundle(root: Path) -> FusionBundle:
    """Load the bundle in ``root`` after checking every file's sha256 against ``fusion.json``.

    Raises
    ------
    FusionError
        If ``fusion.json`` is missing or malformed, or a file is missing or was modified
        (naming the file and both digests).
    """
    path = root / BUNDLE_FILE
    try:
        document: dict[str, Any] = json.loads(path.read_text())
        if document.get("format") != _FORMAT:
            raise FusionError(
                f"{path}: field 'format' is {document.get('format')!r}, not {_FORMAT!r}"
            )
        files = {key: (str(v["path"]), str(v["sha256"])) for key, v in document["files"].items()}
        views = int(document["views"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise FusionError(f"fusion bundle {path} is missing or malformed: {error}") from error
    for key, (name, expected) in files.items():
        file = root / name
        if not file.is_file():
            raise FusionError(f"fusion bundle {root}: file {name!r} ({key}) is missing")
        actual = _digest(file)
        if actual != expected:
            raise FusionError(
                f"fusion bundle {root}: file {name!r} has sha256 {actual} but {BUNDLE_FILE}"
                f" says {expected}; it was modified after export"
            )

    def graph(key: str) -> OnnxGraph:
        if key not in files:
            raise FusionError(f"{path}: field 'files' has no {key!r} entry")
        return OnnxGraph(root / files[key][0])

    return FusionBundle(
        root=root,
        views=views,
        classes=int(document["classes"]),
        mode=str(document["mode"]),
        feature_dim=int(document["feature_dim"]),
        edge_dim=int(document["edge_dim"]),
        exit_policy=str(document["exit_policy"]),
        exit_threshold=float(document["exit_threshold"]),
        devices=tuple(graph(f"device{i}") for i in range(views)),
        edge=graph("edge"),
        cloud=graph("cloud"),
        reference=graph("reference"),
        info=dict(document.get("info", {})),
    )
