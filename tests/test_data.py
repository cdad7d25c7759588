"""Datasets: offline sources, deterministic stratified splits, per-device views."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from tierflow.data import ArrayDataset, load_dataset, quadrant_views, split_dataset
from tierflow.errors import DatasetError


def labelled(n_per_class: int = 20, classes: int = 3) -> ArrayDataset:
    y = np.repeat(np.arange(classes), n_per_class).astype(np.int64)
    x = np.arange(len(y), dtype=np.float32).reshape(-1, 1, 1, 1)  # x identifies the sample
    return ArrayDataset(x, y, classes, name="toy")


def test_splits_are_disjoint_cover_the_data_and_keep_class_proportions():
    data = labelled(n_per_class=20, classes=3)

    splits = split_dataset(data, val_fraction=0.1, test_fraction=0.2, seed=1)

    ids = [set(part.x.ravel().tolist()) for part in (splits.train, splits.val, splits.test)]
    assert set.union(*ids) == set(data.x.ravel().tolist())
    assert sum(len(i) for i in ids) == len(data)
    for part, share in ((splits.test, 0.2), (splits.val, 0.1)):
        assert np.bincount(part.y, minlength=3).tolist() == [round(20 * share)] * 3


def test_the_same_seed_gives_the_same_split_and_another_seed_another():
    data = labelled()

    first, again = split_dataset(data, seed=3), split_dataset(data, seed=3)
    other = split_dataset(data, seed=4)

    np.testing.assert_array_equal(first.test.x, again.test.x)
    assert not np.array_equal(first.test.x, other.test.x)


def test_mnist5k_is_real_digits_split_without_overlap():
    splits = load_dataset("mnist5k")

    assert (len(splits.train), len(splits.val), len(splits.test)) == (3500, 500, 1000)
    assert splits.sample_shape == (1, 28, 28) and splits.classes == 10
    assert float(splits.train.x.min()) >= 0.0 and float(splits.train.x.max()) <= 1.0
    assert np.bincount(splits.test.y).min() >= 90  # every digit in the test split


def test_npz_data_with_its_own_test_split_is_used_as_given(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(
        path,
        x=rng.normal(size=(40, 3)).astype(np.float32),
        y=np.repeat([0, 1], 20),
        x_test=np.ones((6, 3), np.float32),
        y_test=np.array([0, 1, 0, 1, 0, 1]),
    )

    splits = load_dataset(f"npz:{path}")

    np.testing.assert_array_equal(splits.test.x, np.ones((6, 3), np.float32))
    assert len(splits.train) + len(splits.val) == 40


def test_an_npz_file_without_labels_is_refused_naming_the_array(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros((4, 2), np.float32))

    with pytest.raises(DatasetError, match="'y'"):
        load_dataset(f"npz:{path}")


def test_a_folder_of_images_per_class_loads_as_greyscale_in_zero_one(tmp_path):
    for label, value in (("cat", 0), ("dog", 255)):
        (tmp_path / label).mkdir()
        for index in range(10):
            Image.fromarray(np.full((6, 5), value, np.uint8)).save(
                tmp_path / label / f"{index}.png"
            )

    splits = load_dataset(f"folder:{tmp_path}")

    assert splits.sample_shape == (1, 6, 5) and splits.classes == 2
    everything = np.concatenate([splits.train.x, splits.val.x, splits.test.x])
    labels = np.concatenate([splits.train.y, splits.val.y, splits.test.y])
    assert np.all(everything[labels == 1] == 1.0) and np.all(everything[labels == 0] == 0.0)


def test_images_of_different_sizes_are_refused_naming_the_file(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / "a" / "0.png")
    Image.fromarray(np.zeros((7, 6), np.uint8)).save(tmp_path / "a" / "1.png")

    with pytest.raises(DatasetError, match=r"1\.png"):
        load_dataset(f"folder:{tmp_path}")


def test_unknown_specs_and_bad_labels_are_refused():
    with pytest.raises(DatasetError, match="mnist5k"):
        load_dataset("imagenet")
    with pytest.raises(DatasetError, match=r"\[0, 2\)"):
        ArrayDataset(np.zeros((2, 1), np.float32), np.array([0, 2]), classes=2)


def test_quadrant_views_hold_exactly_the_image_pixels():
    images = np.arange(2 * 28 * 28, dtype=np.float32).reshape(2, 1, 28, 28)

    tiles = quadrant_views(images)

    assert [t.shape for t in tiles] == [(2, 1, 14, 14)] * 4
    top = np.concatenate(tiles[:2], axis=3)
    bottom = np.concatenate(tiles[2:], axis=3)
    np.testing.assert_array_equal(np.concatenate([top, bottom], axis=2), images)


def test_the_mnist5k_split_stays_what_trained_runs_were_evaluated_on():
    # A changed split would silently put a run's training digits into its test split.
    splits = load_dataset("mnist5k")

    digest = hashlib.sha256(
        splits.test.x.tobytes() + splits.val.x.tobytes() + splits.train.y.tobytes()
    ).hexdigest()

    assert digest[:16] == "99f261168851c746"
