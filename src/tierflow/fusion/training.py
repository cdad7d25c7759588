"""Training the fusion model (jointly, with device dropout) and its cloud-only reference.

Note [Device dropout]
---------------------
DDNN degrades gracefully when a device fails because the aggregator never learned to
rely on one device alone. Here each training sample drops one random device with
probability ``dropout`` (its mask entry is 0, Note [Fusing the devices present]), so the
edge and the cloud see every "one device missing" pattern during training, and the
runtime's deadline fusion of the devices that did arrive is in-distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from tierflow.data import ArrayDataset, quadrant_views
from tierflow.errors import FusionError
from tierflow.exits.policy import ExitPolicy
from tierflow.fusion.model import CloudOnlyModel, FusionMode, FusionModel
from tierflow.torch_threads import torch_threads


@dataclass(frozen=True)
class TrainSettings:
    """How long and how hard to train (defaults: about 20 s for the fusion model and 17 s
    for the cloud-only reference, measured on one thread of a loaded 2-core host)."""

    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 2e-3
    dropout: float = 0.25  # chance a sample loses one device (Note [Device dropout])
    edge_weight: float = 1.0  # DDNN weighs its exits' losses; equal weights here
    cloud_weight: float = 1.0
    seed: int = 0


def stacked_views(x: NDArray[np.float32]) -> torch.Tensor:
    """Quadrant views of images ``[N, 1, 28, 28]`` stacked as ``[4, N, 1, 14, 14]``."""
    return torch.from_numpy(np.stack(quadrant_views(x)))


def _dropout_mask(views: int, batch: int, rate: float, generator: torch.Generator) -> torch.Tensor:
    mask = torch.ones(views, batch)
    dropped = torch.rand(batch, generator=generator) < rate
    which = torch.randint(0, views, (batch,), generator=generator)
    mask[which[dropped], torch.arange(batch)[dropped]] = 0.0
    return mask


def _batches(count: int, size: int, generator: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(count, generator=generator).split(size))  # type: ignore[no-untyped-call]


def _optimiser(
    model: nn.Module, settings: TrainSettings, samples: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam with a cosine decay over all steps: a short run ends at a low learning rate."""
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    steps = settings.epochs * -(-samples // settings.batch_size)
    return optimiser, torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps)


def train_fusion(
    train: ArrayDataset,
    *,
    mode: FusionMode = "max",
    views: int = 4,
    feature_dim: int = 32,
    edge_dim: int = 16,
    settings: TrainSettings | None = None,
) -> FusionModel:
    """Train a :class:`FusionModel` on ``train``'s quadrant views, both exits jointly.

    The loss is ``edge_weight * CE(edge) + cloud_weight * CE(cloud)`` (DDNN's weighted
    sum of exit losses), with random device dropout (Note [Device dropout]).

    Examples
    --------
    >>> model = train_fusion(load_dataset("mnist5k").train, mode="max")  # doctest: +SKIP
    """
    settings = settings or TrainSettings()
    if views != 4:
        raise FusionError(f"devices: quadrant views give 4 devices, got {views}")
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model = FusionModel(
        views=views, classes=train.classes, mode=mode, feature_dim=feature_dim, edge_dim=edge_dim
    )
    x, y = stacked_views(train.x), torch.from_numpy(train.y)
    optimiser, schedule = _optimiser(model, settings, len(y))
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    with torch_threads(1):  # Note [One torch thread]
        for _ in range(settings.epochs):
            for index in _batches(len(y), settings.batch_size, generator):
                mask = _dropout_mask(views, len(index), settings.dropout, generator)
                edge_logits, cloud_logits = model(x[:, index], mask)
                loss = settings.edge_weight * loss_fn(edge_logits, y[index])
                loss = loss + settings.cloud_weight * loss_fn(cloud_logits, y[index])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
    return model.eval()


def train_cloud_only(
    train: ArrayDataset, *, settings: TrainSettings | None = None
) -> CloudOnlyModel:
    """Train the raw-offload reference :class:`CloudOnlyModel` on the same split."""
    settings = settings or TrainSettings()
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model = CloudOnlyModel(classes=train.classes, image_size=train.x.shape[-1])
    x, y = stacked_views(train.x), torch.from_numpy(train.y)
    optimiser, schedule = _optimiser(model, settings, len(y))
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    with torch_threads(1):  # Note [One torch thread]
        for _ in range(settings.epochs):
            for index in _batches(len(y), settings.batch_size, generator):
                loss = loss_fn(model(x[:, index]), y[index])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
    return model.eval()


def calibrate_exit_threshold(model: FusionModel, val: ArrayDataset, *, policy: ExitPolicy) -> float:
    """The edge exit threshold that maximises validation accuracy with all devices present
    (ties: the lowest, so that the most samples exit at the edge).

    A sample exits at the edge when ``policy.confidence(edge logits) >= threshold`` and is
    otherwise answered by the cloud, as :class:`~tierflow.fusion.services.EdgeService` does.
    """
    with torch.no_grad():
        edge_logits, cloud_logits = model(stacked_views(val.x), torch.ones(model.views))
    confidence = policy.confidence(edge_logits.numpy())
    edge_right = edge_logits.argmax(1).numpy() == val.y
    cloud_right = cloud_logits.argmax(1).numpy() == val.y
    # Candidates: each observed confidence (exit exactly the samples at or above it) and one
    # above them all (never exit at the edge).
    candidates = np.unique(np.append(confidence, 1.0 + 1e-6))
    best, best_right = float(candidates[-1]), -1
    for threshold in candidates:
        exits = confidence >= threshold
        right = int(np.where(exits, edge_right, cloud_right).sum())
        if right > best_right:
            best, best_right = float(threshold), right
    return best
