"""Nodes of prompt_generation (APSAM Algorithm 1), with T chosen from image-level labels when `auto`."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from wsss_project.contracts import TRAIN_SPLIT, cam_key
from wsss_project.geometry.prompts import adaptive_prompts, prompts_table
from wsss_project.geometry.thresholds import N_LEVELS, choose_threshold, heatmap_histogram
from wsss_project.tile_data import (
    Partitions,
    load_partition,
    positive_class_ids,
    tile_rows,
    tiles_of_split,
)

logger = logging.getLogger(__name__)

AUTO = "auto"
SECTION = "prompt_generation"


def _heatmap_histograms(
    cams: Partitions, tiles: pd.DataFrame, classes: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Histograms of heatmap values over the scene part of positive and of negative (tile, class) pairs."""
    positive, negative = np.zeros(N_LEVELS, np.int64), np.zeros(N_LEVELS, np.int64)
    for tile in tile_rows(tiles):
        positives = positive_class_ids(tile, classes)
        for class_id, name in enumerate(classes, start=1):
            heatmap = load_partition(cams, cam_key(name, tile["tile_id"]), "cams")
            hist = heatmap_histogram(heatmap[: tile["height"], : tile["width"]])
            if class_id in positives:
                positive += hist
            else:
                negative += hist
    return positive, negative


def resolve_prompt_generation(
    cams: Partitions, tile_index: pd.DataFrame, prompt_generation: dict, classes: list[str]
) -> tuple[dict, dict]:
    """The prompt_generation settings with a numeric T, and T as an MLflow metric.

    `threshold: auto` chooses T on the train tiles by `auto_threshold.rule` from their heatmaps and
    image-level labels only (geometry/thresholds.py); a number is used as given.
    """
    # Imported here: the schema imports this module (for AUTO).
    from wsss_project.validation.schema import check_section

    threshold = prompt_generation["threshold"]
    # The schema's rules for the keys given (`threshold` is 'auto' or 0..255, the rule's choices, ...).
    check_section(prompt_generation, SECTION, partial=True)
    if threshold == AUTO:
        rule = prompt_generation["auto_threshold"]
        positive, negative = _heatmap_histograms(cams, tiles_of_split(tile_index, TRAIN_SPLIT), classes)
        threshold = choose_threshold(positive, negative, rule["rule"], float(rule["negative_quantile"]),
                                     int(rule["fixed_threshold"]))
        logger.info("T = %d chosen by rule %s from heatmaps and image-level labels (no masks)", threshold, rule["rule"])
    resolved = {**prompt_generation, "threshold": int(threshold)}
    return resolved, {"prompt_generation.threshold": {"value": float(threshold), "step": 0}}


def generate_prompts(
    cams: Partitions, tile_index: pd.DataFrame, prompt_generation: dict, classes: list[str]
) -> pd.DataFrame:
    """Boxes and moment-centroid points for every positive (tile, class) of the chosen splits.

    Tiles whose image-level label is 0 get no prompts (Algorithm 1, line 3).
    """
    threshold = int(prompt_generation["threshold"])
    filters = prompt_generation["filters"]
    records = []
    tiles = tiles_of_split(tile_index, prompt_generation["splits"])
    for tile in tile_rows(tiles):
        for class_id in positive_class_ids(tile, classes):
            heatmap = load_partition(cams, cam_key(classes[class_id - 1], tile["tile_id"]), "cams")
            records.append((tile["tile_id"], class_id, adaptive_prompts(heatmap, threshold, **filters)))
    table = prompts_table(records)
    logger.info(
        "T=%d: %d prompts on %d positive (tile, class) pairs of %d tiles; %d pairs got none",
        threshold, len(table), len(records), len(tiles),
        len(records) - table.groupby(["tile_id", "class_id"]).ngroups,
    )
    return table
