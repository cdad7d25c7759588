"""A trained bottleneck model saved as a deployable model: ``bottleneck:DIR``.

A :class:`~tierflow.compress.bottleneck.Bottleneck` is a whole model (lower part, encoder,
uint8 code, decoder, upper part), so once saved it is planned, built, served and benched
like any other model spec: the planner sees a one-byte-per-element code crossing where a
float tensor used to, and puts the cut there when the link is thin.

=============================  ==========================================================
``bottleneck.json``            format version, base model spec, input shape, cut, code
                               channels, decoder width, dataset, measured accuracy
``weights.safetensors``        the whole model's state dict, with
                               ``weights.safetensors.sha256`` (checked before loading)
=============================  ==========================================================

Rebuilding needs the base spec only for the architecture (every weight, the frozen lower
part included, is in ``weights.safetensors``), so a ``zoo:`` base with random weights
rebuilds exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tierflow.compress.bottleneck import Bottleneck, BottleneckDecoder, BottleneckEncoder
from tierflow.compress.cut import split_at
from tierflow.documents import check_version, read_json_object
from tierflow.errors import ModelSpecError
from tierflow.models.resolve import resolve_model
from tierflow.train.checkpoint import load_tensors, save_tensors

__all__ = ["BottleneckConfig", "load_bottleneck", "save_bottleneck"]

BOTTLENECK_FORMAT_VERSION = 1
CONFIG_FILE = "bottleneck.json"
WEIGHTS_FILE = "weights.safetensors"


@dataclass(frozen=True)
class BottleneckConfig:
    """What ``bottleneck.json`` records: enough to rebuild the model before its weights."""

    base: str
    input_shape: tuple[int, ...]
    cut: str
    code_channels: int
    hidden: int
    dataset: str = ""
    accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tierflow_bottleneck_version": BOTTLENECK_FORMAT_VERSION,
            "base": self.base,
            "input_shape": list(self.input_shape),
            "cut": self.cut,
            "code_channels": self.code_channels,
            "hidden": self.hidden,
            "dataset": self.dataset,
            "accuracy": self.accuracy,
        }

    @classmethod
    def load(cls, folder: Path) -> BottleneckConfig:
        path = folder / CONFIG_FILE
        data = read_json_object(path, what="bottleneck description", error=ModelSpecError)
        check_version(
            data,
            "tierflow_bottleneck_version",
            BOTTLENECK_FORMAT_VERSION,
            source=str(path),
            error=ModelSpecError,
        )
        try:
            return cls(
                base=str(data["base"]),
                input_shape=tuple(int(d) for d in data["input_shape"]),
                cut=str(data["cut"]),
                code_channels=int(data["code_channels"]),
                hidden=int(data["hidden"]),
                dataset=str(data.get("dataset", "")),
                accuracy=None if data.get("accuracy") is None else float(data["accuracy"]),
            )
        except KeyError as exc:
            raise ModelSpecError(f"{path}: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ModelSpecError(f"{path}: malformed: {exc}") from None


def save_bottleneck(
    bottleneck: Bottleneck,
    folder: str | Path,
    *,
    base: str,
    example: torch.Tensor,
    dataset: str = "",
    accuracy: float | None = None,
) -> Path:
    """Write ``bottleneck`` to ``folder`` as a ``bottleneck:DIR`` model; returns ``folder``.

    ``base`` is the spec of the model the bottleneck was trained into (e.g. ``run:DIR``)
    and ``example`` an input it takes; ``accuracy`` (measured) is recorded for reports.
    """
    out = Path(folder)
    config = BottleneckConfig(
        base=base,
        input_shape=tuple(example.shape),
        cut=bottleneck.cut,
        code_channels=bottleneck.code_channels,
        hidden=int(bottleneck.tail.decoder.expand.out_channels),
        dataset=dataset,
        accuracy=accuracy,
    )
    save_tensors(out / WEIGHTS_FILE, bottleneck.state_dict(), {"base": base})
    (out / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return out


def load_bottleneck(folder: str | Path) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The saved bottleneck model (eval mode) and an example input, weights hash-checked.

    Raises
    ------
    ModelSpecError
        If a file is missing, the digest disagrees, or the weights do not fit the model
        that ``bottleneck.json`` describes.
    """
    where = Path(folder)
    config = BottleneckConfig.load(where)
    base, (example,) = resolve_model(config.base, input_shape=config.input_shape)
    parts = split_at(base, example, config.cut)
    channels = parts.activation_shape[1]
    model = Bottleneck(
        parts,
        BottleneckEncoder(channels, config.code_channels),
        BottleneckDecoder(config.code_channels, channels, hidden=config.hidden),
    )
    tensors, _ = load_tensors(
        where / WEIGHTS_FILE, what=f"bottleneck weights of {where}", error=ModelSpecError
    )
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ModelSpecError(
            f"bottleneck:{where}: {WEIGHTS_FILE} does not fit the model {CONFIG_FILE} "
            f"describes: {str(exc).splitlines()[0]}"
        ) from None
    return model.eval(), (example,)
