"""Shared fixtures: the seeded tierflow model zoo (see CONVENTIONS.md, rule 14)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from tierflow.models import resolve_model, zoo_names


@dataclass(frozen=True)
class ZooModel:
    """A zoo model ready to use: its spec string, the module (eval mode) and its inputs."""

    spec: str
    model: nn.Module
    inputs: tuple[torch.Tensor, ...]


@pytest.fixture(params=zoo_names())
def zoo_model(request: pytest.FixtureRequest) -> ZooModel:
    """Each zoo model in turn (chain, residual, multi-branch, GRU, LSTM, transformer)."""
    spec = f"zoo:{request.param}"
    model, inputs = resolve_model(spec)
    return ZooModel(spec, model, inputs)
