"""In-memory labelled arrays and their deterministic train / validation / test split."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tierflow.errors import DatasetError


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """Inputs ``x`` (float32, ``[N, ...]``, one sample per row) and labels ``y`` (int64, ``[N]``).

    Examples
    --------
    >>> data = ArrayDataset(np.zeros((4, 1, 8, 8), np.float32), np.arange(4), classes=4)
    >>> len(data), data.sample_shape
    (4, (1, 8, 8))
    """

    x: NDArray[np.float32]
    y: NDArray[np.int64]
    classes: int
    name: str = "data"

    def __post_init__(self) -> None:
        if self.x.dtype != np.float32:
            raise DatasetError(f"dataset {self.name!r}: x must be float32, not {self.x.dtype}")
        if self.y.dtype != np.int64 or self.y.ndim != 1:
            raise DatasetError(
                f"dataset {self.name!r}: y must be a 1-d int64 array, "
                f"not {self.y.dtype} {list(self.y.shape)}"
            )
        if len(self.x) != len(self.y):
            raise DatasetError(
                f"dataset {self.name!r}: {len(self.x)} inputs but {len(self.y)} labels"
            )
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= self.classes):
            raise DatasetError(
                f"dataset {self.name!r}: labels must lie in [0, {self.classes}), "
                f"found {int(self.y.min())}..{int(self.y.max())}"
            )

    def __len__(self) -> int:
        return len(self.y)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    def subset(self, index: NDArray[np.int64], name: str) -> ArrayDataset:
        return ArrayDataset(self.x[index], self.y[index], self.classes, name)

    def batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0
    ) -> Iterator[tuple[NDArray[np.float32], NDArray[np.int64]]]:
        """Yield ``(x, y)`` batches; the last one may be smaller."""
        if batch_size < 1:
            raise DatasetError(f"batch_size must be >= 1, not {batch_size}")
        order = np.arange(len(self))
        if shuffle:
            np.random.default_rng(seed).shuffle(order)
        for start in range(0, len(self), batch_size):
            index = order[start : start + batch_size]
            yield self.x[index], self.y[index]


@dataclass(frozen=True, eq=False)
class DatasetSplits:
    """Disjoint train, validation (threshold calibration, exit statistics) and test splits."""

    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset

    @property
    def classes(self) -> int:
        return self.train.classes

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.train.sample_shape


def split_dataset(
    data: ArrayDataset, *, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0
) -> DatasetSplits:
    """Shuffle with ``seed`` and cut into train / validation / test, stratified per class.

    Stratifying keeps every class in every split in its overall proportion, so a small
    validation split still calibrates every class's exits (MNIST-5k ships sorted by label).
    """
    if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DatasetError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in (0, 1)"
            " and leave data for training"
        )
    parts = _stratified(data, {"test": test_fraction, "val": val_fraction}, seed=seed)
    return DatasetSplits(train=parts["train"], val=parts["val"], test=parts["test"])


def split_train_val(
    data: ArrayDataset, test: ArrayDataset, *, val_fraction: float = 0.1, seed: int = 0
) -> DatasetSplits:
    """Cut ``data`` into train / validation (stratified) and keep ``test`` as given."""
    if not 0 < val_fraction < 1:
        raise DatasetError(f"val_fraction={val_fraction} must be in (0, 1)")
    parts = _stratified(data, {"val": val_fraction}, seed=seed)
    return DatasetSplits(train=parts["train"], val=parts["val"], test=test)


def _stratified(
    data: ArrayDataset, fractions: dict[str, float], *, seed: int
) -> dict[str, ArrayDataset]:
    """Shuffled, per-class shares of ``data`` named by ``fractions``; the rest is "train"."""
    rng = np.random.default_rng(seed)
    chunks: dict[str, list[NDArray[np.int64]]] = {name: [] for name in [*fractions, "train"]}
    for label in range(data.classes):
        members = np.flatnonzero(data.y == label)
        rng.shuffle(members)
        start = 0
        for name, fraction in fractions.items():
            count = round(len(members) * fraction)
            chunks[name].append(members[start : start + count])
            start += count
        chunks["train"].append(members[start:])
    parts = {}
    # The order of these shuffles is part of the split: train first, then the named
    # shares last to first, as in the first release, so existing runs keep their splits.
    for name in ["train", *reversed(fractions)]:
        chosen = np.sort(np.concatenate(chunks[name]))
        rng.shuffle(chosen)
        if len(chosen) == 0:
            raise DatasetError(f"dataset {data.name!r} is too small: its {name} split is empty")
        parts[name] = data.subset(chosen, f"{data.name}/{name}")
    return parts
