"""A calibration batch: real training samples shaped like a model's input.

Static int8 quantisation measures activation ranges on real inputs; a batch of the first
training samples (deterministic, never validation or test data) is what the build of a
plan with int8 tiers uses (:func:`tierflow.build` ``calibration=``).
"""

from __future__ import annotations

import torch

from tierflow.data.dataset import ArrayDataset
from tierflow.errors import DatasetError

DEFAULT_CALIBRATION_SAMPLES = 256


def calibration_batch(
    train: ArrayDataset,
    *,
    samples: int = DEFAULT_CALIBRATION_SAMPLES,
    like: torch.Tensor | None = None,
) -> torch.Tensor:
    """The first ``samples`` samples of ``train`` (a training split), as a float32 batch.

    Raises
    ------
    DatasetError
        If ``samples < 1``, or the samples are not shaped like ``like`` (batch dimension
        aside) when it is given.

    Examples
    --------
    >>> from tierflow.data import load_dataset
    >>> batch = calibration_batch(load_dataset("mnist5k").train, samples=8)
    >>> tuple(batch.shape)
    (8, 1, 28, 28)
    """
    if samples < 1:
        raise DatasetError(f"calibration samples must be >= 1, got {samples}")
    if like is not None and tuple(train.x.shape[1:]) != tuple(like.shape[1:]):
        raise DatasetError(
            f"calibration data {train.name!r}: samples are {tuple(train.x.shape[1:])}, but "
            f"the model takes {tuple(like.shape[1:])}"
        )
    return torch.from_numpy(train.x[:samples].astype("float32", copy=True))
