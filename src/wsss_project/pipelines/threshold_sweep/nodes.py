"""Nodes of threshold_sweep and prompt_ablation: what a variant adds to the main pipeline's
nodes (empty positive tiles, its table row), and the gathered tables."""

from __future__ import annotations

import logging

import pandas as pd
from matplotlib.figure import Figure

from wsss_project.contracts import F1, IGNORE_INDEX, IOU, SUMMARY_METRICS, TRAIN_SPLIT
from wsss_project.reporting.figures import prompt_ablation_bars, threshold_curve
from wsss_project.tile_data import Partitions, load_partition, tiles_of_split

logger = logging.getLogger(__name__)


def count_empty_positive_tiles(pseudo_masks: Partitions, tile_index: pd.DataFrame, classes: list[str]) -> int:
    """How many train tiles labelled positive for some class got a pseudo-mask without a class pixel
    (the tiles the sweep's metrics measure)."""
    train = tiles_of_split(tile_index, TRAIN_SPLIT)
    empty = 0
    for tile_id in train.loc[train[classes].sum(axis=1) > 0, "tile_id"]:
        mask = load_partition(pseudo_masks, tile_id, "pseudo_masks")
        empty += int(not ((mask > 0) & (mask < IGNORE_INDEX)).any())
    return empty


def sweep_row(
    pseudo_metrics: dict, cam_metrics: dict, prompts: pd.DataFrame, n_empty: int, prompt_generation: dict
) -> dict:
    """One row of the sweep table: the pseudo-labels' metrics at T, and the CAM > T baseline's."""
    return {
        "T": int(prompt_generation["threshold"]),
        **{key: pseudo_metrics[key] for key in SUMMARY_METRICS},
        "n_prompts": len(prompts),
        "n_empty_tiles": int(n_empty),
        "cam_threshold_f1": cam_metrics[F1],
        "cam_threshold_iou": cam_metrics[IOU],
    }


def gather_threshold_sweep(*rows: dict) -> tuple[pd.DataFrame, Figure, dict]:
    """The sweep table (one row per T), its figure (APSAM Fig. 5) and MLflow metrics.

    The best T by pseudo-label IoU was chosen with the train tiles' masks: it is reported as
    `oracle_best_T` (a ceiling for label-free rules such as `threshold: auto`), never used as a setting.
    """
    table = pd.DataFrame(list(rows)).sort_values("T").reset_index(drop=True)
    best = table.loc[table[IOU].idxmax()]
    table["oracle_best_T"] = int(best["T"])
    logger.info("Threshold sweep:\n%s\noracle_best_T (by IoU against masks): %d (IoU %.4f)",
                table.to_string(index=False), best["T"], best[IOU])
    curves = {
        f"threshold_sweep.{key}": [{"value": float(v), "step": int(t)} for t, v in zip(table["T"], table[key], strict=True)]
        for key in (*SUMMARY_METRICS, "cam_threshold_iou", "n_prompts")
    }
    curves["threshold_sweep.oracle_best_T"] = {"value": float(best["T"]), "step": 0}
    curves["threshold_sweep.oracle_best_iou"] = {"value": float(best[IOU]), "step": 0}
    return table, threshold_curve(table), curves


def ablation_row(pseudo_metrics: dict, sam_labeling: dict, prompt_generation: dict) -> dict:
    """One row of the prompt ablation table (APSAM Table II)."""
    return {
        "prompt_mode": sam_labeling["prompt_mode"],
        "T": int(prompt_generation["threshold"]),
        **{key: pseudo_metrics[key] for key in SUMMARY_METRICS},
    }


def gather_prompt_ablation(*rows: dict) -> tuple[pd.DataFrame, Figure, dict]:
    """The ablation table, its bar chart and MLflow metrics."""
    table = pd.DataFrame(list(rows))
    logger.info("Prompt ablation:\n%s", table.to_string(index=False))
    metrics = {
        f"prompt_ablation.{row.prompt_mode}.{key}": {"value": float(getattr(row, key)), "step": 0}
        for row in table.itertuples(index=False)
        for key in SUMMARY_METRICS
    }
    return table, prompt_ablation_bars(table), metrics
