"""The DDNN-style multi-device network: device branches, an edge fusion exit, a cloud head.

Note [Compact features on the wire]
-----------------------------------
DDNN (Teerapittayanon et al., ICDCS 2017) binarizes what devices send so that the
aggregator receives a few bytes per device. Here each device ends in ``feature_dim``
sigmoid units quantised to one byte each (``round(255 * s)``, uint8 on the wire): 8
bits per unit instead of DDNN's 1, at ``feature_dim`` bytes per sample and device (32 by
default, against 196 float32 = 784 bytes for a raw 14x14 view; 16 bytes lost about 1 pp
of accuracy on MNIST-5k in our runs). Training passes the
rounding through a straight-through estimator (Bengio et al. 2013): the forward pass sees
exactly the bytes the edge will see, the backward pass the identity. The edge dequantises
(``q / 255``), fuses and exits; its hidden state goes to the cloud quantised the same way.

Note [Fusing the devices present]
---------------------------------
A presence mask ``[V]`` (or ``[V, B]`` in training) marks which devices arrived. Features
are in [0, 1] after dequantising, so zeroing an absent device is neutral for ``max`` (the
maximum of non-negative values), is excluded from ``mean`` by dividing by the number
present, and for ``concat`` leaves a zero block: one masked formula for all three modes
that exports to ONNX as plain arithmetic.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

from tierflow.errors import FusionError

FusionMode = Literal["max", "mean", "concat"]
FUSION_MODES: tuple[str, ...] = get_args(FusionMode)
_LEVELS = 255.0  # uint8 levels of a quantised feature (Note [Compact features on the wire])


def check_fusion_mode(mode: str) -> FusionMode:
    """``mode`` as a :data:`FusionMode`; FusionError naming the choices otherwise."""
    if mode not in FUSION_MODES:
        raise FusionError(f"fusion mode {mode!r} is unknown; choose one of {FUSION_MODES}")
    return mode  # type: ignore[return-value]  # checked against the Literal's values


def quantise(unit: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] rounded to 256 levels, with a straight-through gradient."""
    levels = torch.round(unit * _LEVELS) / _LEVELS
    return unit + (levels - unit).detach()


def to_uint8(unit: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] as the bytes that cross the wire."""
    return torch.round(unit * _LEVELS).to(torch.uint8)


def from_uint8(codes: torch.Tensor) -> torch.Tensor:
    return codes.to(torch.float32) / _LEVELS


class DeviceBranch(nn.Module):
    """What one end device runs on its view ``[B, 1, 14, 14]``: features in [0, 1] ``[B, D]``."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 14 -> 7
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 7 -> 3
            nn.Flatten(),
            nn.Linear(32 * 3 * 3, feature_dim),
        )

    def forward(self, view: torch.Tensor) -> torch.Tensor:
        return quantise(torch.sigmoid(self.body(view)))


def fuse(features: torch.Tensor, mask: torch.Tensor, mode: FusionMode) -> torch.Tensor:
    """Fuse ``features [V, B, D]`` (in [0, 1]) over the devices ``mask`` marks present.

    ``mask`` is ``[V]`` (one presence per request) or ``[V, B]`` (per sample); see
    Note [Fusing the devices present]. Returns ``[B, D]`` (``[B, V*D]`` for concat).
    """
    views = features.shape[0]
    weights = mask.to(features.dtype).reshape(views, -1, 1)
    present = features * weights
    if mode == "max":
        return present.max(dim=0).values
    if mode == "mean":
        return present.sum(dim=0) / weights.sum(dim=0).clamp(min=1.0)
    return present.permute(1, 0, 2).reshape(features.shape[1], -1)


class EdgeFusion(nn.Module):
    """The edge: fuse device features, an exit head, and compact features for the cloud."""

    def __init__(
        self, views: int, feature_dim: int, edge_dim: int, classes: int, mode: FusionMode
    ) -> None:
        super().__init__()
        self.mode = mode
        fused_dim = feature_dim * views if mode == "concat" else feature_dim
        self.trunk = nn.Sequential(nn.Linear(fused_dim, 64), nn.ReLU())
        self.exit_head = nn.Linear(64, classes)
        self.to_cloud = nn.Linear(64, edge_dim)

    def forward(
        self, features: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(edge logits ``[B, C]``, cloud-bound features in [0, 1] ``[B, E]``)."""
        hidden = self.trunk(fuse(features, mask, self.mode))
        return self.exit_head(hidden), quantise(torch.sigmoid(self.to_cloud(hidden)))


class CloudHead(nn.Module):
    """The cloud: a larger classifier on the edge's compact features."""

    def __init__(self, edge_dim: int, classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(edge_dim, 128),
            nn.ReLU(),
            nn.Linear(128, 128),
            nn.ReLU(),
            nn.Linear(128, classes),
        )

    def forward(self, edge_features: torch.Tensor) -> torch.Tensor:
        return self.body(edge_features)  # type: ignore[no-any-return]


class FusionModel(nn.Module):
    """Device branches (one per view, own weights) → edge fusion and exit → cloud head.

    Parameters
    ----------
    views:
        Number of end devices ``V``; device ``i`` sees view ``i``.
    classes:
        Number of classes.
    mode:
        How the edge fuses device features: ``max``, ``mean`` or ``concat``.
    feature_dim, edge_dim:
        Bytes per sample each device sends the edge, and the edge sends the cloud.

    Examples
    --------
    >>> model = FusionModel(views=4, classes=10, mode="max")
    >>> views = torch.zeros(4, 2, 1, 14, 14)
    >>> edge_logits, cloud_logits = model(views, torch.ones(4))
    >>> tuple(edge_logits.shape), tuple(cloud_logits.shape)
    ((2, 10), (2, 10))
    """

    def __init__(
        self,
        *,
        views: int,
        classes: int,
        mode: FusionMode = "max",
        feature_dim: int = 32,
        edge_dim: int = 16,
    ) -> None:
        super().__init__()
        if views < 1 or classes < 2 or feature_dim < 1 or edge_dim < 1:
            raise FusionError(
                f"fusion model needs views >= 1, classes >= 2 and positive feature sizes;"
                f" got views={views}, classes={classes}, feature_dim={feature_dim},"
                f" edge_dim={edge_dim}"
            )
        self.views, self.classes = views, classes
        self.feature_dim, self.edge_dim = feature_dim, edge_dim
        self.mode = check_fusion_mode(mode)
        self.devices = nn.ModuleList(DeviceBranch(feature_dim) for _ in range(views))
        self.edge = EdgeFusion(views, feature_dim, edge_dim, classes, self.mode)
        self.cloud = CloudHead(edge_dim, classes)

    def forward(self, views: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(edge logits, cloud logits) for stacked views ``[V, B, 1, H, W]``."""
        features = torch.stack([branch(v) for branch, v in zip(self.devices, views, strict=True)])
        edge_logits, edge_features = self.edge(features, mask)
        return edge_logits, self.cloud(edge_features)


class CloudOnlyModel(nn.Module):
    """The raw-offload reference: every device sends its raw view, the cloud reassembles
    the whole image and classifies it with a CNN of the fusion model's widths (16 and 32
    channels, one more conv so the 28x28 image pools to 3x3 like a 14x14 view does),
    seeing all pixels at once, with no byte bottleneck and no exit. It has fewer weights
    (about 33k) than the fusion model (86k at the bench settings, 14k per device), so its
    lead is not bought with capacity.

    Takes the stacked quadrant views ``[4, B, 1, h, w]`` (top-left, top-right,
    bottom-left, bottom-right, as :func:`tierflow.data.quadrant_views` cuts them).
    """

    def __init__(self, *, classes: int, image_size: int = 28) -> None:
        super().__init__()
        side = image_size // 8
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 28 -> 14
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 14 -> 7
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 7 -> 3
            nn.Flatten(),
            nn.Linear(32 * side * side, 64),
            nn.ReLU(),
            nn.Linear(64, classes),
        )

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        if views.shape[0] != 4:
            raise FusionError(f"the cloud-only model takes 4 quadrant views, got {views.shape[0]}")
        top = torch.cat([views[0], views[1]], dim=3)
        bottom = torch.cat([views[2], views[3]], dim=3)
        return self.body(torch.cat([top, bottom], dim=2))  # type: ignore[no-any-return]
