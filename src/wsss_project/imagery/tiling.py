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

from wsss_project.errors import UserInputError


@dataclass(frozen=True)
class TileWindow:
    """Where a tile sits in its scene: top-left (row, col) and its valid height and width."""

    row: int
    col: int
    height: int
    width: int


def tile_stride(tile_size: int, overlap: float) -> int:
    """Step between tile origins for a fractional overlap in [0, 1)."""
    # Imported here: the schema imports imagery modules. Its rules for `data.tile_size` and `data.overlap`.
    from wsss_project.validation.schema import check_section

    check_section({"tile_size": tile_size, "overlap": overlap}, "data", partial=True)
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
    return pad_tile(part, tile_size, pad_value)


def pad_tile(part: np.ndarray, tile_size: int, pad_value: int | None = None) -> np.ndarray:
    """A tile from the scene part under its window (read by window, or cut by cut_tile): padded
    at the bottom and right to `tile_size` by reflecting the part itself, or with `pad_value`.

    The padding reads nothing beyond the part, so a window read gives the tile cut from the scene.
    """
    pad_bottom, pad_right = tile_size - part.shape[0], tile_size - part.shape[1]
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


def mark_outside_scene(mask: np.ndarray, window: TileWindow, fill_value: int) -> np.ndarray:
    """A copy of a tile-sized mask with every pixel past the valid window (padding) set to `fill_value`."""
    marked = np.array(mask, copy=True)
    marked[window.height :] = fill_value
    marked[:, window.width :] = fill_value
    return marked


def owned_masks(windows: list[TileWindow], height: int, width: int) -> list[np.ndarray]:
    """Which pixels of its valid window each tile owns, so that every scene pixel has exactly one owner.

    A pixel belongs to the covering tile whose valid-window centre is nearest (Euclidean); ties go
    to the tile listed first. Overlapping train tiles thus count each scene pixel once. Returns one
    bool (window.height, window.width) mask per window, in the order given. Raises when the windows
    leave a pixel of the (height, width) scene uncovered.
    """
    if not windows:
        raise ValueError("owned_masks got no tile windows")
    best = np.full((height, width), np.inf)
    owner = np.full((height, width), -1, dtype=np.int64)
    for index, w in enumerate(windows):
        if w.row < 0 or w.col < 0 or w.row + w.height > height or w.col + w.width > width:
            raise UserInputError(f"tile window {w} lies outside its {height}x{width} scene: rerun data_preparation")
        # Doubled coordinates keep the distance exact: pixel centre 2i + 1, window centre 2row + height.
        dr = 2 * np.arange(w.row, w.row + w.height) + 1 - (2 * w.row + w.height)
        dc = 2 * np.arange(w.col, w.col + w.width) + 1 - (2 * w.col + w.width)
        distance = (dr[:, None] ** 2 + dc[None, :] ** 2).astype(np.float64)
        rows, cols = slice(w.row, w.row + w.height), slice(w.col, w.col + w.width)
        nearer = distance < best[rows, cols]  # strict: an equal distance keeps the earlier tile
        best[rows, cols] = np.where(nearer, distance, best[rows, cols])
        owner[rows, cols] = np.where(nearer, index, owner[rows, cols])
    if (owner < 0).any():
        raise UserInputError(
            f"the tile windows leave {int((owner < 0).sum())} pixels of the {height}x{width} scene uncovered: "
            "tiles are missing from the tile index (rerun data_preparation)"
        )
    return [
        owner[w.row : w.row + w.height, w.col : w.col + w.width] == index for index, w in enumerate(windows)
    ]
