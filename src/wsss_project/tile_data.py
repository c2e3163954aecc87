"""Shared access to the per-tile datasets of the contracts (partitions, splits, label columns).

The contracts themselves (tile id, CAM key, splits, ignore value) live in `contracts.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from wsss_project.contracts import SPLITS
from wsss_project.errors import UserInputError
from wsss_project.imagery.tiling import TileWindow, stitch_mean

Partitions = Mapping[str, Any]  # PartitionedDataset: key -> loader callable (or an array in memory)


def load_partition(partitions: Partitions, key: str, dataset: str) -> np.ndarray:
    """Load one partition, whether lazily (a callable) or already in memory."""
    try:
        item = partitions[key]
    except KeyError:
        raise KeyError(f"dataset `{dataset}` has no partition {key!r}: rerun the pipeline that writes it") from None
    return item() if callable(item) else item


def tiles_of_split(tile_index: pd.DataFrame, splits: list[str] | str) -> pd.DataFrame:
    """Rows of the tile index in the given split(s), in a stable order."""
    splits = [splits] if isinstance(splits, str) else list(splits)
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}: use train and/or test")
    return tile_index[tile_index["split"].isin(splits)].sort_values("tile_id").reset_index(drop=True)


def positive_class_ids(tile: Any, classes: list[str]) -> list[int]:
    """Class ids (1-based) a tile is labelled positive for; `tile` is a tile_index row (a Series or
    dict). Columns are read by name, so class names with spaces or dashes work (itertuples would
    rename them to `_5`)."""
    return [k for k, name in enumerate(classes, start=1) if int(tile[name])]


def tile_rows(tile_index: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of a tile table as dicts keyed by column name (any class name is a valid key)."""
    return tile_index.to_dict("records")


def stack_tiles(tiles: Partitions, tile_ids: list[str], dataset: str = "tiles") -> np.ndarray:
    """Load tiles into one (N, H, W[, C]) array, for training and batched inference."""
    return np.stack([load_partition(tiles, tile_id, dataset) for tile_id in tile_ids])


def stitch_scene(
    partitions: Partitions, scene_tiles: pd.DataFrame, height: int, width: int, dataset: str,
    key_of: Callable[[str], str] = str,
) -> np.ndarray:
    """(height, width) uint8: one scene stitched from the partitions of its tiles (`key_of(tile_id)`
    names each tile's partition). Test tiles never overlap, so stitching copies each value; a pixel
    no tile covers is an error, not a silent 0."""
    stitched = stitch_mean(
        ((TileWindow(t.row, t.col, t.height, t.width), load_partition(partitions, key_of(t.tile_id), dataset))
         for t in scene_tiles.itertuples(index=False)),
        height, width,
    )
    if np.isnan(stitched).any():
        raise UserInputError(f"the tiles of `{dataset}` do not cover their scene: rerun data_preparation")
    return stitched.astype(np.uint8)
