"""Cutting scenes into fixed-size tiles and stitching tile outputs back, exactly.

A tile is always `tile_size` x `tile_size`. Where the last tile of a row or column runs past
the scene border, the scene is padded (reflected, so the classifier sees plausible texture) and
the tile records its valid `height` and `width`; stitching only reads that valid part, so
stitching the tiles of a scene gives back the scene exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class TileWindow:
    """Where a tile sits in its scene: top-left (row, col) and its valid height and width."""

    row: int
    col: int
    height: int
    width: int


def tile_stride(tile_size: int, overlap: float) -> int:
    """Step between tile origins for a fractional overlap in [0, 1)."""
    if tile_size <= 0:
        raise ValueError(f"parameter `data.tile_size` must be positive, got {tile_size}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"parameter `data.overlap` must be in [0, 1), got {overlap}")
    return max(1, int(round(tile_size * (1.0 - overlap))))


def tile_origins(length: int, tile_size: int, stride: int) -> list[int]:
    """Origins along one axis so that tiles cover [0, length); the last may overhang."""
    origins = [0]
    while origins[-1] + tile_size < length:
        origins.append(origins[-1] + stride)
    return origins


def tile_windows(height: int, width: int, tile_size: int, overlap: float) -> list[TileWindow]:
    """Every tile window of a (height, width) scene, row-major."""
    stride = tile_stride(tile_size, overlap)
    return [
        TileWindow(r, c, min(tile_size, height - r), min(tile_size, width - c))
        for r in tile_origins(height, tile_size, stride)
        for c in tile_origins(width, tile_size, stride)
    ]


def cut_tile(
    array: np.ndarray, window: TileWindow, tile_size: int, pad_value: int | None = None
) -> np.ndarray:
    """Cut one tile; pad past the border by reflection, or with `pad_value` (e.g. 255 = ignore)."""
    part = array[window.row : window.row + window.height, window.col : window.col + window.width]
    pad_bottom, pad_right = tile_size - window.height, tile_size - window.width
    if pad_bottom == 0 and pad_right == 0:
        return np.ascontiguousarray(part)
    if pad_value is not None:
        border, value = cv2.BORDER_CONSTANT, pad_value
    else:
        # Reflection needs the part to be larger than the pad; replicate covers tiny scenes.
        small = part.shape[0] <= pad_bottom or part.shape[1] <= pad_right
        border, value = (cv2.BORDER_REPLICATE if small else cv2.BORDER_REFLECT_101), 0
    return cv2.copyMakeBorder(part, 0, pad_bottom, 0, pad_right, border, value=value)


def stitch_mean(
    pieces: Iterable[tuple[TileWindow, np.ndarray]], height: int, width: int
) -> np.ndarray:
    """Average overlapping tile outputs back into one (height, width[, C]) float32 array.

    Each piece is a tile-sized array (tile_size, tile_size[, C]); only its valid window is used.
    Pixels covered by no tile are NaN, so a gap cannot pass for a prediction.
    """
    total: np.ndarray | None = None
    count = np.zeros((height, width), dtype=np.float32)
    for window, piece in pieces:
        valid = piece[: window.height, : window.width].astype(np.float32)
        if total is None:
            total = np.zeros((height, width, *valid.shape[2:]), dtype=np.float32)
        rows = slice(window.row, window.row + window.height)
        cols = slice(window.col, window.col + window.width)
        total[rows, cols] += valid
        count[rows, cols] += 1.0
    if total is None:
        raise ValueError("stitch_mean got no tiles")
    covered = count > 0
    out = np.full_like(total, np.nan)
    out[covered] = total[covered] / count[covered].reshape(-1, *([1] * (total.ndim - 2)))
    return out


def iter_tiles(
    array: np.ndarray, tile_size: int, overlap: float, pad_value: int | None = None
) -> Iterator[tuple[TileWindow, np.ndarray]]:
    """Yield (window, tile) for every tile of a scene array."""
    for window in tile_windows(array.shape[0], array.shape[1], tile_size, overlap):
        yield window, cut_tile(array, window, tile_size, pad_value)
