"""Nodes of pseudo_label_comparison: label the train tiles with one labeller, time it, score it; then
gather every labeller's row into the table, its figure and MLflow metrics.

Each variant node labels *and* scores, returning one row: the masks of one labeller (64 KiB per 256²
tile) live only inside its node, whereas separate labelling and scoring nodes would all sit in one
topological level, so Kedro would hold every labeller's masks at once. The work itself is the main
pipelines' code: sam_labeling's `build_segmenter` and `label_tiles`, evaluation's `cam_threshold_mask`
and `evaluate_pseudo_labels` (train scenes, each scene pixel once, ignore counted as background),
so a variant configured like the run scores what the run's `pseudo_labels` stage scores.

Timing: the train tiles are labelled source by source, each source timed on its own, so the table has
seconds per tile pooled and per source; building the segmenter (loading SAM) is `setup_seconds`,
apart. A variant whose parameters say `skipped` (a SAM variant without a checkpoint) labels nothing
and gives a row with status `skipped` and the reason, logged once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from wsss_project.contracts import (
    F1,
    IGNORE_INDEX,
    IGNORED_FRACTION,
    IOU,
    SECONDS_PER_TILE,
    SUMMARY_METRICS,
    TRAIN_SPLIT,
    cam_key,
)
from wsss_project.imagery.tiling import mark_outside_scene
from wsss_project.pipelines.evaluation.nodes import (
    cam_threshold_mask,
    evaluate_pseudo_labels,
    owned_train_tiles,
    tile_window,
)
from wsss_project.pipelines.sam_labeling.nodes import build_segmenter, label_tiles
from wsss_project.reporting.figures import pseudo_label_comparison_bars
from wsss_project.sweep_variants import PSEUDO_LABEL_COMPARISON
from wsss_project.tile_data import Partitions, load_partition, tile_rows, tiles_of_split

logger = logging.getLogger(__name__)

VARIANT, STATUS, NOTE, N_TILES, SETUP_SECONDS = "variant", "status", "note", "n_tiles", "setup_seconds"
RAN, SKIPPED = "ran", "skipped"
# Per source, the table and MLflow carry these (pooled: every column of SUMMARY_METRICS too).
PER_SOURCE = (IOU, F1, SECONDS_PER_TILE)
LOGGED = (*SUMMARY_METRICS, IGNORED_FRACTION, SECONDS_PER_TILE, SETUP_SECONDS)

Masks = dict[str, np.ndarray]


def _train_tiles_by_source(tile_index: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The train tiles of each source, sources in name order."""
    train = tiles_of_split(tile_index, TRAIN_SPLIT)
    return {str(source): rows for source, rows in train.groupby("source", sort=True)}


def label_by_source(label: Callable[[pd.DataFrame], Masks], tile_index: pd.DataFrame) -> tuple[Masks, dict[str, tuple[int, float]]]:
    """The masks of every train tile, labelled one source at a time by `label` (tile_index rows ->
    masks), and (tiles, seconds) per source."""
    masks, timings = {}, {}
    for source, rows in _train_tiles_by_source(tile_index).items():
        started = time.perf_counter()
        labelled = label(rows)
        seconds = time.perf_counter() - started
        timings[source] = (len(labelled), seconds)
        logger.info("Labelled %d %s train tiles in %.1f s (%.1f tiles/s)", len(labelled), source, seconds,
                    len(labelled) / max(seconds, 1e-9))
        masks.update(labelled)
    return masks, timings


def cam_threshold_masks(cams: Partitions, tiles: pd.DataFrame, threshold: int, classes: list[str]) -> Masks:
    """CAM > T as the pseudo-mask of each tile (the localizer alone, as the `cam_threshold` stage
    measures it): class k where the tile is positive for k and its CAM exceeds T; 255 outside the scene."""
    masks = {}
    for tile in tile_rows(tiles):
        labels = np.array([int(tile[name]) for name in classes])
        heatmaps = np.stack([load_partition(cams, cam_key(name, tile["tile_id"]), "cams") for name in classes])
        masks[tile["tile_id"]] = mark_outside_scene(cam_threshold_mask(heatmaps, labels, threshold),
                                                    tile_window(tile), IGNORE_INDEX)
    return masks


def ignored_fraction(masks: Masks, tile_index: pd.DataFrame) -> float:
    """The share of the train scenes' pixels that the masks leave ignore, each scene pixel once (read
    from its owning tile, as the scores are)."""
    ignored = pixels = 0
    for tile, owned in owned_train_tiles(tile_index):
        inside = masks[tile["tile_id"]][: int(tile["height"]), : int(tile["width"])][owned]
        ignored, pixels = ignored + int((inside == IGNORE_INDEX).sum()), pixels + inside.size
    return ignored / pixels if pixels else float("nan")


def _per_tile(tiles: int, seconds: float) -> float:
    return seconds / tiles if tiles else float("nan")


def comparison_row(
    variant: str, masks: Masks, timings: dict[str, tuple[int, float]], setup_seconds: float,
    tile_masks: Partitions, tile_index: pd.DataFrame, classes: list[str],
) -> dict:
    """One row of the table: the labeller's scores on the train scenes (pooled, and per source when
    there are several), its ignored share, and its seconds per tile."""
    metrics = evaluate_pseudo_labels(masks, tile_masks, tile_index, classes)
    n_tiles = sum(n for n, _ in timings.values())
    row = {
        VARIANT: variant, STATUS: RAN, NOTE: "", N_TILES: n_tiles, SETUP_SECONDS: float(setup_seconds),
        SECONDS_PER_TILE: _per_tile(n_tiles, sum(s for _, s in timings.values())),
        **{key: float(metrics[key]) for key in SUMMARY_METRICS},
        IGNORED_FRACTION: ignored_fraction(masks, tile_index),
    }
    for source, scores in metrics["per_source"].items():  # empty with one source (evaluation's rule)
        row[f"{source}.{IOU}"], row[f"{source}.{F1}"] = float(scores[IOU]), float(scores[F1])
        row[f"{source}.{SECONDS_PER_TILE}"] = _per_tile(*timings[source])
    logger.info("%s.%s: IoU %.4f, F1 %.4f, %.3f s per tile", PSEUDO_LABEL_COMPARISON, variant, row[IOU], row[F1],
                row[SECONDS_PER_TILE])
    return row


def skipped_row(variant: str, reason: str) -> dict:
    """The row of a labeller that did not run, saying why."""
    logger.info("%s.%s skipped: %s", PSEUDO_LABEL_COMPARISON, variant, reason)
    return {VARIANT: variant, STATUS: SKIPPED, NOTE: reason}


def compare_cam_threshold(
    variant: str, cams: Partitions, tile_index: pd.DataFrame, tile_masks: Partitions, prompt_generation: dict,
    classes: list[str],
) -> dict:
    """The CAM > T labeller at the run's resolved T: its masks, timed and scored."""
    threshold = int(prompt_generation["threshold"])
    masks, timings = label_by_source(lambda rows: cam_threshold_masks(cams, rows, threshold, classes), tile_index)
    return comparison_row(variant, masks, timings, 0.0, tile_masks, tile_index, classes)


def compare_segmenter(
    variant: str, skipped: str | None, sam_labeling: dict | None, tiles: Partitions, cams: Partitions,
    prompts: pd.DataFrame, tile_index: pd.DataFrame, tile_masks: Partitions, prompt_generation: dict,
    classes: list[str], device: str,
) -> dict:
    """One segmenter labeller (sam_labeling with the variant's overrides) on the train tiles, with the
    run's prompts and resolved T: its masks, timed and scored; or its `skipped` row."""
    if skipped is not None:
        return skipped_row(variant, skipped)
    if sam_labeling is None:
        raise ValueError(f"parameter `{PSEUDO_LABEL_COMPARISON}.{variant}.sam_labeling` is null but the variant "
                         "is not skipped: its parameters are made by sweep_variants.comparison_parameters")
    started = time.perf_counter()
    segmenter = build_segmenter(sam_labeling, device)
    setup_seconds = time.perf_counter() - started
    train_only = {**prompt_generation, "splits": [TRAIN_SPLIT]}  # the tiles the comparison scores
    masks, timings = label_by_source(
        lambda rows: label_tiles(segmenter, tiles, cams, prompts, rows, sam_labeling, train_only, classes), tile_index
    )
    return comparison_row(variant, masks, timings, setup_seconds, tile_masks, tile_index, classes)


def gather_comparison(*rows: dict) -> tuple[pd.DataFrame, Figure, dict]:
    """The comparison table (one row per labeller, in declared order), its figure and MLflow metrics
    (`pseudo_label_comparison.<variant>.<metric>` and `.<variant>.<source>.<metric>`, ran variants only)."""
    table = pd.DataFrame(list(rows))
    logger.info("Pseudo-label comparison (train scenes, each scene pixel once):\n%s", table.to_string(index=False))
    metrics = {}
    for row in rows:
        if row[STATUS] != RAN:
            continue
        columns = [*LOGGED, *(key for key in row if key.rpartition(".")[2] in PER_SOURCE and "." in key)]
        for column in columns:
            metrics[f"{PSEUDO_LABEL_COMPARISON}.{row[VARIANT]}.{column}"] = {"value": float(row[column]), "step": 0}
    return table, pseudo_label_comparison_bars(table), metrics
