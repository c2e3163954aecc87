"""A lossless PNG dataset that loads and saves numpy arrays, written atomically.

kedro-datasets' pillow.ImageDataset speaks PIL images; every node here works on uint8 arrays
(RGB tiles, class-index masks, 0..255 heatmaps), so this dataset keeps them arrays end to end and
never leaves a half-written PNG behind (utils/atomic.py: a temporary file, then a rename).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np
from kedro.io import AbstractDataset, DatasetError

from wsss_project.utils.atomic import write_bytes_atomic


def write_png_atomic(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 (H,W) or RGB (H,W,3) array as PNG via a temporary file and rename."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise DatasetError(f"{path}: PNG needs a uint8 (H,W) or (H,W,3) array, got {array.dtype} {array.shape}")
    if array.ndim == 3:
        if array.shape[2] != 3:
            raise DatasetError(f"{path}: expected 3 channels, got {array.shape[2]}")
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise DatasetError(f"{path}: PNG encoding failed")
    write_bytes_atomic(path, encoded.tobytes())


def read_png(path: str | Path) -> np.ndarray:
    """Read a PNG written by write_png_atomic: RGB (H,W,3) or single-channel (H,W) uint8."""
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise DatasetError(f"{path}: cannot read PNG")
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    return array


class PNGArrayDataset(AbstractDataset[np.ndarray, np.ndarray]):
    """Local PNG file <-> uint8 numpy array (RGB or single channel)."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = PurePosixPath(filepath)
        self.metadata = metadata

    def load(self) -> np.ndarray:
        return read_png(self._filepath)

    def save(self, data: np.ndarray) -> None:
        write_png_atomic(self._filepath, data)

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
