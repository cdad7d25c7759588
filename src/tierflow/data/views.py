"""Per-device views of one input, for multi-device fusion (DDNN's multi-view setting)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from tierflow.errors import DatasetError


def quadrant_views(x: NDArray[np.float32]) -> list[NDArray[np.float32]]:
    """Split images ``[N, C, H, W]`` into four tiles (top-left, top-right, bottom-left,
    bottom-right), each ``[N, C, H/2, W/2]``: device ``i`` observes tile ``i`` only.

    The tiles do not overlap, so together they hold exactly the input's pixels: offloading
    all raw views costs what offloading the image does.

    Examples
    --------
    >>> tiles = quadrant_views(np.zeros((2, 1, 28, 28), np.float32))
    >>> [t.shape for t in tiles][0]
    (2, 1, 14, 14)
    """
    if x.ndim != 4:
        raise DatasetError(f"quadrant views need images [N, C, H, W], got shape {list(x.shape)}")
    height, width = x.shape[2] // 2, x.shape[3] // 2
    if height == 0 or width == 0:
        raise DatasetError(f"images of shape {list(x.shape)} are too small to tile")
    return [
        np.ascontiguousarray(x[:, :, rows, cols])
        for rows in (slice(0, height), slice(height, 2 * height))
        for cols in (slice(0, width), slice(width, 2 * width))
    ]
