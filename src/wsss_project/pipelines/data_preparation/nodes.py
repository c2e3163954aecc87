"""Nodes of data_preparation: read or generate scenes, split them, tile them, label the tiles."""

from __future__ import annotations

import json
import logging
import re
import time
from functools import partial

import numpy as np
import pandas as pd

from wsss_project.contracts import IGNORE_INDEX, TRAIN_SPLIT, tile_id_for
from wsss_project.errors import UserInputError
from wsss_project.imagery.labels import image_level_labels, split_scenes
from wsss_project.imagery.readers import (
    DecodedImages,
    find_scene_files,
    is_geotiff,
    validate_rgb_bands,
)
from wsss_project.imagery.scenes import ArrayScene, Scene, open_folder_scene, read_settings
from wsss_project.imagery.synthetic import generate_scene
from wsss_project.imagery.tiling import TileWindow, pad_tile, tile_windows
from wsss_project.validation.schema import RADIOMETRY_STRETCH, check_section

logger = logging.getLogger(__name__)

SYNTHETIC_SOURCE = "synthetic"
FALLBACK_SOURCE = "folder"
SECTION = "data"
# Scenes named in a log line about them (no CRS, rotated transform); the count says the rest.
MAX_NAMED_SCENES = 3


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
        scenes[f"synthetic_{index:04d}"] = ArrayScene(image, mask, SYNTHETIC_SOURCE)
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
    settings = read_settings(
        validate_rgb_bands(cfg.get("rgb_bands")), _stretch_percentiles(cfg),
        cfg["radiometry"] == RADIOMETRY_STRETCH, class_values, palette, int(cfg["stretch_sample_pixels"]),
    )
    files = find_scene_files(cfg["images_dir"], cfg["masks_dir"], cfg["extensions"])
    scenes: dict[str, Scene] = {}
    nodata_scenes, nodata_pixels, read_pixels, sampled = 0, 0, 0, 0
    no_crs, rotated = [], []
    started = time.perf_counter()
    for number, scene_file in enumerate(files, start=1):
        scene, stats = open_folder_scene(
            scene_file.image_path, scene_file.mask_path, source_of(scene_file.scene_id, cfg.get("source_pattern")),
            settings,
        )
        scenes[scene_file.scene_id] = scene
        nodata_scenes += int(stats.nodata > 0)
        nodata_pixels += stats.nodata
        read_pixels += stats.pixels
        sampled += int(not stats.whole)
        if scene.info.crs is None and is_geotiff(scene_file.image_path):
            no_crs.append(scene_file.image_path.name)
        if scene.info.rotated:
            rotated.append(scene_file.image_path.name)
        if number % 10 == 0 or number == len(files):
            logger.info("Read %d/%d scenes (%.1f scenes/s)", number, len(files), number / (time.perf_counter() - started))
    if nodata_scenes:
        logger.info(
            "%d/%d scenes have nodata pixels: %.2f%% of all pixels are ignored (255) in the masks",
            nodata_scenes, len(files), 100.0 * nodata_pixels / read_pixels,
        )
    if sampled:
        logger.info(
            "%d/%d scenes are larger than data.folder.stretch_sample_pixels (%d): their stretch "
            "percentiles come from a decimated read; their tiles are read by window",
            sampled, len(files), settings.stretch_sample_pixels,
        )
    _log_unusual_georeferencing(no_crs, rotated)
    return scenes


def _log_unusual_georeferencing(no_crs: list[str], rotated: list[str]) -> None:
    """One line each for the GeoTIFFs without CRS and the scenes with a rotated or sheared
    transform: what the run does with them (README, data section)."""
    if no_crs:
        logger.warning(
            "%d GeoTIFF scene(s) have no CRS (%s): treated as not georeferenced (crs None); "
            "a non-identity transform is kept as given",
            len(no_crs), _named(no_crs),
        )
    if rotated:
        logger.warning(
            "%d scene(s) have a rotated or sheared transform (%s): tiles are cut in pixel space "
            "and the transform is kept as given",
            len(rotated), _named(rotated),
        )


def _named(names: list[str]) -> str:
    """The first MAX_NAMED_SCENES names, and how many more."""
    shown = ", ".join(names[:MAX_NAMED_SCENES])
    return shown + (f" and {len(names) - MAX_NAMED_SCENES} more" if len(names) > MAX_NAMED_SCENES else "")


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

    Every folder scene is opened and checked (its stretch read, its mask: see
    imagery.scenes.open_folder_scene) before anything is returned, so bad input fails before any
    output is written; a folder scene holds no pixels, its tiles are read by window later.
    """
    _check_data(data)  # data.source is one of the schema's DATA_SOURCES
    if data["source"] == "synthetic":
        return _synthetic_scenes(data, seed)
    return _folder_scenes(data, len(classes))


def split_scene_table(scenes_raw: dict[str, Scene], data: dict, seed: int) -> pd.DataFrame:
    """One row per scene: id, source, size, georeferencing, image path (None for synthetic
    scenes; later stages read a scene's validity by window from it) and its seeded train/test split."""
    _check_data(data)
    metas = [s.meta for s in scenes_raw.values()]
    table = pd.DataFrame(
        {
            "scene_id": list(scenes_raw),
            "source": [s.source for s in scenes_raw.values()],
            "height": [s.height for s in scenes_raw.values()],
            "width": [s.width for s in scenes_raw.values()],
            "crs": [m.get("crs") for m in metas],
            "transform": [json.dumps(m.get("transform")) for m in metas],
            "image_path": pd.Series([m.get("image_path") for m in metas], dtype=object),
        }
    )
    split = split_scenes(table, float(data["split"]["test_fraction"]), seed)
    table["split"] = table["scene_id"].map(split)
    counts = table.groupby(["source", "split"]).size().to_dict()
    logger.info("Scene split by source: %s", counts)
    return table.sort_values("scene_id").reset_index(drop=True)


def _tile_image(scene: Scene, window: TileWindow, tile_size: int, cache: DecodedImages) -> np.ndarray:
    """One RGB tile, read when its partition is saved."""
    return pad_tile(scene.read_image(window, cache), tile_size)


def _tile_mask(scene: Scene, window: TileWindow, tile_size: int, cache: DecodedImages) -> np.ndarray:
    """One class-index tile mask (padding 255 = ignore), read when its partition is saved."""
    return pad_tile(scene.read_mask(window, cache), tile_size, pad_value=IGNORE_INDEX)


def tile_scenes(
    scenes_raw: dict[str, Scene], scenes: pd.DataFrame, data: dict, classes: list[str]
) -> tuple[pd.DataFrame, dict[str, partial], dict[str, partial]]:
    """Cut train scenes into overlapping tiles and test scenes into non-overlapping ones.

    Returns the tile index (with one 0/1 image-level label column per class, from each tile's
    mask window, read here) and, for the RGB tiles and the class-index tile masks (padding
    marked 255 = ignore), one callable per tile that reads it by window: PartitionedDataset
    calls each as it saves that partition, so at most one tile is in memory at once.
    """
    _check_data(data)
    tile_size = int(data["tile_size"])
    min_fraction = float(data["label_min_fraction"])
    # one decode cache per pass: PNG / JPEG scenes are decoded once per pass, not once per tile
    label_cache, tile_cache, mask_cache = DecodedImages(), DecodedImages(), DecodedImages()
    rows, tiles, masks = [], {}, {}
    started = time.perf_counter()
    for number, scene in enumerate(scenes.itertuples(index=False), start=1):
        raw = scenes_raw[scene.scene_id]
        overlap = float(data["overlap"]) if scene.split == TRAIN_SPLIT else 0.0
        for window in tile_windows(scene.height, scene.width, tile_size, overlap):
            tile_id = tile_id_for(scene.scene_id, window.row, window.col)
            tiles[tile_id] = partial(_tile_image, raw, window, tile_size, tile_cache)
            masks[tile_id] = partial(_tile_mask, raw, window, tile_size, mask_cache)
            labels = image_level_labels(_tile_mask(raw, window, tile_size, label_cache), len(classes), min_fraction)
            rows.append(
                {
                    "tile_id": tile_id, "scene_id": scene.scene_id, "source": scene.source,
                    "row": window.row, "col": window.col,
                    "height": window.height, "width": window.width, "split": scene.split,
                    **{name: int(labels[k]) for k, name in enumerate(classes)},
                }
            )
        if number % 10 == 0 or number == len(scenes):
            logger.info(
                "Labelled the tiles of %d/%d scenes (%d tiles, %.1f tiles/s)",
                number, len(scenes), len(rows), len(rows) / (time.perf_counter() - started),
            )
    index = pd.DataFrame(rows)
    summary = index.groupby("split")[classes].agg(["sum", "count"])
    logger.info("Tiled %d scenes into %d tiles; positives per split:\n%s", len(scenes), len(index), summary)
    return index, tiles, masks
