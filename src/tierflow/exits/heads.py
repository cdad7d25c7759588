"""Small side classifiers for early exits, described by plain data so a run can rebuild them.

Heads follow BranchyNet's branches (Teerapittayanon et al., ICPR 2016): a few cheap layers
that turn an intermediate feature map into class logits. The default per feature shape:

=================  =====================================================================
``[C, H, W]``      max pool to about ``grid`` x ``grid``, conv 3x3 (C -> ``channels``),
                   ReLU, max pool to about ``pool`` x ``pool``, flatten, linear to
                   ``classes``
``[T, D]``         mean over the ``T`` tokens, linear ``D`` -> ``classes``
``[F]``            linear ``F`` -> ``classes``
=================  =====================================================================

Pooling to a small grid first keeps the head's cost independent of the feature map's
size: an exit should cost a fraction of the layers before it (on ``zoo:lenet_wide`` the
head is about 0.18 MFLOPs against 0.24 for ``conv1`` and pooling). Max pooling to a grid
rather than one global average keeps some spatial layout, which a digit classifier needs.
The pools are plain ``MaxPool2d`` with kernels fixed from ``in_shape`` (side ``H`` pools
with kernel ``H // grid`` to ``H // (H // grid)``, e.g. 12 -> 6, 28 -> 7), not adaptive
ones: ONNX export of ``adaptive_max_pool2d`` to a size other than 1 fails, and heads are
exported on their own to run on a tier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from tierflow.errors import ExitError

HeadKind = Literal["conv", "tokens", "linear"]


@dataclass(frozen=True)
class HeadSpec:
    """Architecture of one exit head (what ``model.json`` records to rebuild it).

    Attributes
    ----------
    kind:
        ``"conv"`` for ``[C, H, W]`` features, ``"tokens"`` for ``[T, D]``, ``"linear"`` for
        ``[F]``.
    in_shape:
        Shape of one sample of the attach node's output (without the batch dimension).
    classes:
        Number of logits the head returns.
    channels:
        Output channels of the ``conv`` head's convolution (unused otherwise).
    grid:
        Target side of the ``conv`` head's pooling before its convolution (unused
        otherwise); the kernel is ``side // grid``, so the result is at least ``grid``.
    pool:
        Target side of the pooling after the convolution, likewise.
    """

    kind: HeadKind
    in_shape: tuple[int, ...]
    classes: int
    channels: int = 32
    grid: int = 6
    pool: int = 3

    def __post_init__(self) -> None:
        dims = {"conv": 3, "tokens": 2, "linear": 1}
        if self.kind not in dims:
            raise ExitError(f"head kind {self.kind!r}: choose one of {', '.join(dims)}")
        if len(self.in_shape) != dims[self.kind] or any(d <= 0 for d in self.in_shape):
            raise ExitError(
                f"a {self.kind!r} head needs a {dims[self.kind]}-d positive in_shape, "
                f"got {list(self.in_shape)}"
            )
        if self.classes < 2 or min(self.channels, self.grid, self.pool) < 1:
            raise ExitError(
                f"head classes={self.classes}, channels={self.channels}, grid={self.grid}, "
                f"pool={self.pool}: need classes >= 2 and positive channels, grid and pool"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "in_shape": list(self.in_shape),
            "classes": self.classes,
            "channels": self.channels,
            "grid": self.grid,
            "pool": self.pool,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "head") -> HeadSpec:
        try:
            kind = str(data["kind"])
            if kind not in ("conv", "tokens", "linear"):
                raise ExitError(f"{source}.kind {kind!r} is not conv, tokens or linear")
            return cls(
                kind=kind,  # type: ignore[arg-type]  # checked just above
                in_shape=tuple(int(d) for d in data["in_shape"]),
                classes=int(data["classes"]),
                channels=int(data.get("channels", 32)),
                grid=int(data.get("grid", 6)),
                pool=int(data.get("pool", 3)),
            )
        except KeyError as exc:
            raise ExitError(f"{source}: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ExitError(f"{source}: malformed head spec: {exc}") from None


def default_head_spec(in_shape: Sequence[int], classes: int) -> HeadSpec:
    """The default head for features of one sample shaped ``in_shape``.

    Examples
    --------
    >>> default_head_spec((8, 12, 12), 10).kind
    'conv'
    """
    shape = tuple(int(d) for d in in_shape)
    kinds: dict[int, HeadKind] = {3: "conv", 2: "tokens", 1: "linear"}
    if len(shape) not in kinds:
        raise ExitError(
            f"no default exit head for features shaped {list(shape)}: expected [C, H, W], "
            "[T, D] or [F]"
        )
    if len(shape) == 3:
        # Never pool up: a feature map smaller than the default grid keeps its size.
        grid = min(6, shape[1], shape[2])
        return HeadSpec("conv", shape, classes, grid=grid, pool=min(3, grid))
    return HeadSpec(kinds[len(shape)], shape, classes)


class _TokenMean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


def _pooled(size: tuple[int, int], target: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Kernel and output size of a max pool taking ``size`` down to about ``target``."""
    kernel = (max(1, size[0] // target), max(1, size[1] // target))
    return kernel, (size[0] // kernel[0], size[1] // kernel[1])


def build_head(spec: HeadSpec) -> nn.Module:
    """A freshly initialised head (uses the global RNG; seed it for reproducible weights)."""
    if spec.kind == "conv":
        channels_in, height, width = spec.in_shape
        first, grid = _pooled((height, width), spec.grid)
        second, side = _pooled(grid, spec.pool)
        return nn.Sequential(
            nn.MaxPool2d(first),
            nn.Conv2d(channels_in, spec.channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(second),
            nn.Flatten(),
            nn.Linear(spec.channels * side[0] * side[1], spec.classes),
        )
    if spec.kind == "tokens":
        return nn.Sequential(_TokenMean(), nn.Linear(spec.in_shape[1], spec.classes))
    return nn.Linear(spec.in_shape[0], spec.classes)
