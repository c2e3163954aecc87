"""Nodes of threshold_sweep and prompt_ablation: per-variant parameters, and the gathered tables."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from wsss_project.pipelines.evaluation.nodes import evaluate_pseudo_labels
from wsss_project.reporting.figures import prompt_ablation_bars, threshold_curve

logger = logging.getLogger(__name__)

TABLE_METRICS = ("oa", "precision", "recall", "f1", "iou")


def with_threshold(prompt_generation: dict, threshold: int) -> dict:
    """The prompt_generation parameters with T replaced by this namespace's value."""
    return {**prompt_generation, "threshold": int(threshold)}


def with_prompt_mode(sam_labeling: dict, prompt_mode: str) -> dict:
    """The sam_labeling parameters with this namespace's prompt mode."""
    return {**sam_labeling, "prompt_mode": prompt_mode}


def evaluate_variant(
    pseudo_masks: dict, tile_masks: dict, tile_index: pd.DataFrame, classes: list[str]
) -> tuple[dict, int]:
    """Pseudo-label metrics and the number of positive tiles left with an empty mask, in one pass.

    A variant's pseudo-masks are lazy (computed when loaded); one pass decodes each tile once.
    """
    positive = set(tile_index.loc[tile_index[classes].sum(axis=1) > 0, "tile_id"])
    empty = 0

    def counting(tile_id: str, load):
        def compute() -> np.ndarray:
            nonlocal empty
            mask = load() if callable(load) else load
            if tile_id in positive and not ((mask > 0) & (mask < 255)).any():
                empty += 1
            return mask

        return compute

    metrics = evaluate_pseudo_labels(
        {tile_id: counting(tile_id, load) for tile_id, load in pseudo_masks.items()}, tile_masks, tile_index, classes
    )
    return metrics, empty


def sweep_row(pseudo_metrics: dict, cam_metrics: dict, prompts: pd.DataFrame, n_empty: int, threshold: int) -> dict:
    """One row of the sweep table: the pseudo-labels' metrics at T, and the CAM > T baseline's."""
    return {
        "T": int(threshold),
        **{key: pseudo_metrics[key] for key in TABLE_METRICS},
        "n_prompts": len(prompts),
        "n_empty_tiles": int(n_empty),
        "cam_threshold_f1": cam_metrics["f1"],
        "cam_threshold_iou": cam_metrics["iou"],
    }


def gather_threshold_sweep(*rows: dict) -> tuple[pd.DataFrame, Figure, dict]:
    """The sweep table (one row per T), its figure (APSAM Fig. 5) and MLflow metrics.

    The best T by pseudo-label IoU was chosen with the train tiles' masks: it is reported as
    `oracle_best_T` (a ceiling for label-free rules such as `threshold: auto`), never used as a setting.
    """
    table = pd.DataFrame(list(rows)).sort_values("T").reset_index(drop=True)
    best = table.loc[table["iou"].idxmax()]
    table["oracle_best_T"] = int(best["T"])
    logger.info("Threshold sweep:\n%s\noracle_best_T (by IoU against masks): %d (IoU %.4f)",
                table.to_string(index=False), best["T"], best["iou"])
    curves = {
        f"threshold_sweep.{key}": [{"value": float(v), "step": int(t)} for t, v in zip(table["T"], table[key], strict=True)]
        for key in (*TABLE_METRICS, "cam_threshold_iou", "n_prompts")
    }
    curves["threshold_sweep.oracle_best_T"] = {"value": float(best["T"]), "step": 0}
    curves["threshold_sweep.oracle_best_iou"] = {"value": float(best["iou"]), "step": 0}
    return table, threshold_curve(table), curves


def ablation_row(prompt_generation: dict, pseudo_metrics: dict, prompt_mode: str) -> dict:
    """One row of the prompt ablation table (APSAM Table II)."""
    return {"prompt_mode": prompt_mode, "T": int(prompt_generation["threshold"]), **{k: pseudo_metrics[k] for k in TABLE_METRICS}}


def gather_prompt_ablation(*rows: dict) -> tuple[pd.DataFrame, Figure, dict]:
    """The ablation table, its bar chart and MLflow metrics."""
    table = pd.DataFrame(list(rows))
    logger.info("Prompt ablation:\n%s", table.to_string(index=False))
    metrics = {
        f"prompt_ablation.{row.prompt_mode}.{key}": {"value": float(getattr(row, key)), "step": 0}
        for row in table.itertuples(index=False)
        for key in TABLE_METRICS
    }
    return table, prompt_ablation_bars(table), metrics
