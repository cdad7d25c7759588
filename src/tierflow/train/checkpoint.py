"""Tensors on disk: safetensors files with a ``.sha256`` digest, and training checkpoints.

Every file tierflow writes here gets ``FILE.sha256`` next to it (``sha256sum`` format,
``HEX  NAME``), and every read checks it first: a truncated copy or a tampered weight is
refused before a single tensor is used. Safetensors holds only tensors and string
metadata, so loading never runs code (unlike a pickled ``torch.save`` file).

A checkpoint stores the model's state dict under ``model.*``, the optimizer's per-parameter
state under ``optimizer.INDEX.KEY``, and as JSON metadata the epoch, the step, the
training settings, the optimizer's parameter groups and the history so far.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tierflow.errors import TierflowError, TrainingError

CHECKPOINT_FORMAT_VERSION = 1


def digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_tensors(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """Write a safetensors file and its ``.sha256``, each atomically (temp file + rename)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    # clone(): safetensors refuses tensors that share storage (views, tied weights).
    owned = {name: t.detach().cpu().contiguous().clone() for name, t in tensors.items()}
    temporary = path.with_name(path.name + ".tmp")
    save_file(owned, str(temporary), metadata=dict(metadata or {}))
    digest = hashlib.sha256(temporary.read_bytes()).hexdigest()
    digest_temporary = path.with_name(path.name + ".sha256.tmp")
    digest_temporary.write_text(f"{digest}  {path.name}\n")
    temporary.replace(path)
    digest_temporary.replace(digest_path(path))


def load_tensors(
    path: Path, *, what: str, error: type[TierflowError] = TrainingError
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read ``(tensors, metadata)`` after checking ``path.sha256``, which must exist."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    digests = digest_path(path)
    if not digests.is_file():
        raise error(f"{what} {path} has no {digests.name} next to it; refusing unverified tensors")
    fields = digests.read_text().split()
    expected = fields[0].lower() if fields else ""
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise error(
            f"{what} {path} has sha256 {actual} but {digests} says {expected!r}; the file is "
            "corrupt or was modified"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise error(f"{what} {path} is not a valid safetensors file: {exc}") from exc
    return tensors, metadata


@dataclass(frozen=True)
class Checkpoint:
    """A training state read back from disk.

    Attributes
    ----------
    epoch:
        Epochs completed.
    step:
        Optimizer steps taken.
    model_state, optimizer_state:
        Ready for ``load_state_dict``.
    settings, history:
        The training settings and per-epoch records, as JSON-ready data.
    """

    epoch: int
    step: int
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    settings: dict[str, Any]
    history: list[dict[str, Any]]


def save_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    step: int,
    settings: Mapping[str, Any],
    history: list[dict[str, Any]],
) -> None:
    tensors = {f"model.{name}": value for name, value in model.state_dict().items()}
    state = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    save_tensors(
        path,
        tensors,
        {
            "tierflow_checkpoint_version": str(CHECKPOINT_FORMAT_VERSION),
            "epoch": str(epoch),
            "step": str(step),
            "settings": json.dumps(dict(settings)),
            "history": json.dumps(history),
            "param_groups": json.dumps(state["param_groups"]),
            "optimizer_scalars": json.dumps(scalars),
        },
    )


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (digest checked first).

    Raises
    ------
    TrainingError
        If the file or its digest is missing, they disagree, or the metadata is malformed.
    """
    tensors, metadata = load_tensors(path, what="checkpoint")
    version = metadata.get("tierflow_checkpoint_version")
    if version != str(CHECKPOINT_FORMAT_VERSION):
        raise TrainingError(
            f"checkpoint {path}: tierflow_checkpoint_version is {version!r}; this tierflow "
            f"reads {CHECKPOINT_FORMAT_VERSION}"
        )
    try:
        scalars: dict[str, dict[str, Any]] = json.loads(metadata["optimizer_scalars"])
        per_param: dict[int, dict[str, Any]] = {
            int(index): dict(values) for index, values in scalars.items()
        }
        model_state: dict[str, torch.Tensor] = {}
        for name, value in tensors.items():
            kind, _, rest = name.partition(".")
            if kind == "model":
                model_state[rest] = value
            elif kind == "optimizer":
                index, _, key = rest.partition(".")
                per_param.setdefault(int(index), {})[key] = value
            else:
                raise TrainingError(f"checkpoint {path}: unexpected tensor {name!r}")
        return Checkpoint(
            epoch=int(metadata["epoch"]),
            step=int(metadata["step"]),
            model_state=model_state,
            optimizer_state={
                "state": per_param,
                "param_groups": json.loads(metadata["param_groups"]),
            },
            settings=json.loads(metadata["settings"]),
            history=json.loads(metadata["history"]),
        )
    except KeyError as exc:
        raise TrainingError(f"checkpoint {path}: missing metadata {exc.args[0]!r}") from None
    except (ValueError, TypeError) as exc:
        raise TrainingError(f"checkpoint {path}: malformed metadata: {exc}") from None
