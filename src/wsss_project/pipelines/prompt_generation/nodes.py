"""Nodes of prompt_generation (APSAM Algorithm 1)."""

from __future__ import annotations

import logging

import pandas as pd

from wsss_project.geometry.prompts import adaptive_prompts, prompts_table
from wsss_project.tile_data import (
    Partitions,
    cam_key,
    load_partition,
    positive_class_ids,
    tile_rows,
    tiles_of_split,
)

logger = logging.getLogger(__name__)


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
