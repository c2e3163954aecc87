"""Nodes of data_preparation: read or generate scenes, split them, tile them, label the tiles."""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from wsss_project.contracts import IGNORE_INDEX, TRAIN_SPLIT, tile_id_for
from wsss_project.errors import UserInputError
from wsss_project.imagery.labels import image_level_labels, split_scenes
from wsss_project.imagery.synthetic import generate_scene
from wsss_project.imagery.tiling import cut_tile, tile_windows
from wsss_project.validation.schema import RADIOMETRY_STRETCH, check_section

logger = logging.getLogger(__name__)

SYNTHETIC_SOURCE = "synthetic"
FALLBACK_SOURCE = "folder"
SECTION = "data"


@dataclass
class Scene:
    """One input image with its class-index mask and georeferencing metadata."""

    image: np.ndarray
    mask: np.ndarray
    source: str
    meta: dict[str, Any] = field(default_factory=dict)


def source_of(scene_id: str, pattern: str | None) -> str:
    """The scene's source: the lower-cased first group of `pattern` in its id, else "folder"."""
    match = re.match(pattern, scene_id) if pattern else None
    return match.group(1).lower() if match else FALLBACK_SOURCE


def _synthetic_scenes(params: dict, seed: int) -> dict[str, Scene]:
    cfg = params["synthetic"]
    n_scenes = int(cfg["n_scenes"])
    scenes = {}
    started = time.perf_counter()
    for index in range(n_scenes):
        image, mask = generate_scene(seed + index, int(cfg["height"]), int(cfg["width"]), cfg.get("generator") or {})
        scenes[f"synthetic_{index:04d}"] = Scene(image, mask, SYNTHETIC_SOURCE)
    logger.info(
        "Generated %d synthetic scenes of %dx%d in %.1f s",
        n_scenes, cfg["height"], cfg["width"], time.perf_counter() - started,
    )
    return scenes


def _folder_scenes(params: dict, n_classes: int) -> dict[str, Scene]:
    cfg = params["folder"]
    if not cfg.get("images_dir"):
        raise UserInputError("parameter `data.folder.images_dir` must be set when data.source is 'folder'")
    if not cfg.get("masks_dir"):
        raise UserInputError(
            "parameter `data.folder.masks_dir` must be set: masks give the tiles their image-level labels"
        )
    class_values = list(cfg["mask_class_values"])
    palette = cfg.get("mask_palette")
    expected = len(palette) if palette else len(class_values)
    if expected != n_classes:
        name = "mask_palette" if palette else "mask_class_values"
        raise UserInputError(f"parameter `data.folder.{name}` has {expected} entries for {n_classes} classes")
    # Imported here so that the synthetic default does not load rasterio.
    from wsss_project.imagery.readers import (
        find_scene_files,
        read_image_and_valid,
        read_mask,
        validate_rgb_bands,
    )

    rgb_bands = validate_rgb_bands(cfg.get("rgb_bands"))
    low, high = _stretch_percentiles(cfg)
    stretch_uint8 = cfg["radiometry"] == RADIOMETRY_STRETCH
    files = find_scene_files(cfg["images_dir"], cfg["masks_dir"], cfg["extensions"])
    scenes = {}
    nodata_scenes, nodata_pixels, all_pixels = 0, 0, 0
    started = time.perf_counter()
    for number, scene_file in enumerate(files, start=1):
        image, valid, meta = read_image_and_valid(scene_file.image_path, low, high, rgb_bands, stretch_uint8)
        mask = read_mask(scene_file.mask_path, image.shape[:2], class_values, palette)
        # The image decides: where it has no data the mask's class is no evidence for labels
        # or metrics, whatever the mask file says.
        mask[~valid] = IGNORE_INDEX
        nodata = int((~valid).sum())
        nodata_scenes += int(nodata > 0)
        nodata_pixels += nodata
        all_pixels += valid.size
        meta = {**meta, "image_path": str(scene_file.image_path)}
        scenes[scene_file.scene_id] = Scene(
            image, mask, source_of(scene_file.scene_id, cfg.get("source_pattern")), meta
        )
        if number % 10 == 0 or number == len(files):
            logger.info("Read %d/%d scenes (%.1f scenes/s)", number, len(files), number / (time.perf_counter() - started))
    if nodata_scenes:
        logger.info(
            "%d/%d scenes have nodata pixels: %.2f%% of all pixels are ignored (255) in the masks",
            nodata_scenes, len(files), 100.0 * nodata_pixels / all_pixels,
        )
    return scenes


def _stretch_percentiles(cfg: dict) -> tuple[float, float]:
    """`data.folder.stretch_percentiles` as (low, high) (0 <= low < high <= 100: the schema's rule)."""
    low, high = (float(v) for v in cfg["stretch_percentiles"])
    return low, high


def _check_data(data: dict) -> None:
    """The schema's rules for the `data` keys given (written once, there): a node called outside a
    run, or with a few keys, still fails naming `data.<key>`."""
    check_section(data, SECTION, partial=True)


def load_scenes(data: dict, classes: list[str], seed: int) -> dict[str, Scene]:
    """Generate the synthetic scenes or read a folder of imagery, by `data.source`.

    Everything is read and checked before anything is returned, so bad input fails before any
    output is written.
    """
    _check_data(data)  # data.source is one of the schema's DATA_SOURCES
    if data["source"] == "synthetic":
        return _synthetic_scenes(data, seed)
    return _folder_scenes(data, len(classes))


def split_scene_table(scenes_raw: dict[str, Scene], data: dict, seed: int) -> pd.DataFrame:
    """One row per scene: id, source, size, georeferencing, image file (None for synthetic scenes) and its
    seeded train/test split."""
    _check_data(data)
    table = pd.DataFrame(
        {
            "scene_id": list(scenes_raw),
            "source": [s.source for s in scenes_raw.values()],
            "height": [s.image.shape[0] for s in scenes_raw.values()],
            "width": [s.image.shape[1] for s in scenes_raw.values()],
            "crs": [s.meta.get("crs") for s in scenes_raw.values()],
            "transform": [json.dumps(s.meta.get("transform")) for s in scenes_raw.values()],
            # where the scene's nodata is read again, by window, when its predictions are written
            "image_path": [s.meta.get("image_path") for s in scenes_raw.values()],
        }
    )
    split = split_scenes(table, float(data["split"]["test_fraction"]), seed)
    table["split"] = table["scene_id"].map(split)
    counts = table.groupby(["source", "split"]).size().to_dict()
    logger.info("Scene split by source: %s", counts)
    return table.sort_values("scene_id").reset_index(drop=True)


def tile_scenes(
    scenes_raw: dict[str, Scene], scenes: pd.DataFrame, data: dict, classes: list[str]
) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Cut train scenes into overlapping tiles and test scenes into non-overlapping ones.

    Returns the tile index (with one 0/1 image-level label column per class), the RGB tiles and
    the class-index tile masks (padding marked 255 = ignore).
    """
    _check_data(data)
    tile_size = int(data["tile_size"])
    min_fraction = float(data["label_min_fraction"])
    rows, tiles, masks = [], {}, {}
    for scene in scenes.itertuples(index=False):
        raw = scenes_raw[scene.scene_id]
        overlap = float(data["overlap"]) if scene.split == TRAIN_SPLIT else 0.0
        for window in tile_windows(scene.height, scene.width, tile_size, overlap):
            tile_id = tile_id_for(scene.scene_id, window.row, window.col)
            tiles[tile_id] = cut_tile(raw.image, window, tile_size)
            masks[tile_id] = cut_tile(raw.mask, window, tile_size, pad_value=IGNORE_INDEX)
            labels = image_level_labels(masks[tile_id], len(classes), min_fraction)
            rows.append(
                {
                    "tile_id": tile_id, "scene_id": scene.scene_id, "source": scene.source,
                    "row": window.row, "col": window.col,
                    "height": window.height, "width": window.width, "split": scene.split,
                    **{name: int(labels[k]) for k, name in enumerate(classes)},
                }
            )
    index = pd.DataFrame(rows)
    summary = index.groupby("split")[classes].agg(["sum", "count"])
    logger.info("Tiled %d scenes into %d tiles; positives per split:\n%s", len(scenes), len(index), summary)
    return index, tiles, masks
