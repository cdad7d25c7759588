"""A calibration batch: real training samples shaped like a model's input.

Static int8 quantisation measures activation ranges on real inputs; a batch of the first
training samples (deterministic, never validation or test data) is what the build of a
plan with int8 tiers uses (:func:`tierflow.build` ``calibration=``).
"""

from __future__ import annotations

import torch

from tierflow.data.sources import load_dataset
from tierflow.errors import DatasetError

DEFAULT_CALIBRATION_SAMPLES = 256


def calibration_batch(
    spec: str, like: torch.Tensor, *, samples: int = DEFAULT_CALIBRATION_SAMPLES
) -> torch.Tensor:
    """The first ``samples`` training samples of dataset ``spec``, as a float32 batch.

    Raises
    ------
    DatasetError
        If the samples are not shaped like ``like`` (batch dimension aside) or
        ``samples < 1``.

    Examples
    --------
    >>> batch = calibration_batch("mnist5k", torch.zeros(1, 1, 28, 28), samples=8)
    >>> tuple(batch.shape)
    (8, 1, 28, 28)
    """
    if samples < 1:
        raise DatasetError(f"calibration samples must be >= 1, got {samples}")
    train = load_dataset(spec).train
    if tuple(train.x.shape[1:]) != tuple(like.shape[1:]):
        raise DatasetError(
            f"calibration data {spec!r}: samples are {tuple(train.x.shape[1:])}, but the "
            f"model takes {tuple(like.shape[1:])}"
        )
    return torch.from_numpy(train.x[:samples].astype("float32", copy=True))
