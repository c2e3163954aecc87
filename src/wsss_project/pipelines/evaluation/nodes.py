"""Nodes of evaluation: the metrics of each stage, pooled and per source.

Stages (APSAM Table I and the classic WSSS baseline):
- cam_threshold: CAM > T as the mask, on every train tile (a negative tile predicts nothing);
- pseudo_labels: the segmenter's pseudo-masks on every train tile; pixels the pseudo-mask
  marks 255 (ignore) count as background, since nothing was claimed there;
- prediction: the ResUNet's stitched masks of the test scenes at their original size.
Ground truth comes from `tile_masks`; its 255 pixels (padding, ignore) are left out.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from wsss_project.evaluation.metrics import ConfusionAccumulator
from wsss_project.imagery.labels import IGNORE_INDEX
from wsss_project.imagery.tiling import TileWindow, stitch_mean
from wsss_project.reporting.figures import sample_panels, stage_comparison
from wsss_project.tile_data import Partitions, cam_key, load_partition, tile_rows, tiles_of_split

logger = logging.getLogger(__name__)

STAGES = ("cam_threshold", "pseudo_labels", "prediction")
MLFLOW_METRICS = ("oa", "precision", "recall", "f1", "iou", "miou")


def cam_threshold_mask(heatmaps: np.ndarray, labels: np.ndarray, threshold: int) -> np.ndarray:
    """CAM > T as a class-index mask; of several classes above T the strongest wins.

    heatmaps: (C, H, W) uint8; labels: (C,) image-level labels (a class labelled 0 is never
    predicted, as APSAM only prompts positive tiles).
    """
    scores = np.where(labels[:, None, None] > 0, heatmaps.astype(np.int16), -1)
    strongest = scores.argmax(axis=0)
    above = np.take_along_axis(scores, strongest[None], axis=0)[0] > threshold
    return np.where(above, strongest + 1, 0).astype(np.uint8)


def decode_prediction(prediction: np.ndarray, n_classes: int) -> np.ndarray:
    """Class-index mask from a stored prediction (binary tasks store 0/255)."""
    if n_classes == 1:
        return (prediction > 0).astype(np.uint8)
    return prediction


def _summarise(pooled: ConfusionAccumulator, by_source: dict[str, ConfusionAccumulator], names: list[str]) -> dict:
    result = pooled.metrics(names)
    result["per_source"] = {source: acc.metrics(names) for source, acc in sorted(by_source.items())}
    return result


def _class_names(classes: list[str]) -> list[str]:
    return ["background", *classes]


def _accumulators(classes: list[str]) -> tuple[ConfusionAccumulator, dict[str, ConfusionAccumulator]]:
    n = len(classes) + 1
    return ConfusionAccumulator(n, IGNORE_INDEX), defaultdict(lambda: ConfusionAccumulator(n, IGNORE_INDEX))


def evaluate_cam_threshold(
    cams: Partitions, tile_masks: Partitions, tile_index: pd.DataFrame, prompt_generation: dict, classes: list[str]
) -> dict[str, Any]:
    """Metrics of CAM > T on every train tile."""
    threshold = int(prompt_generation["threshold"])
    pooled, by_source = _accumulators(classes)
    for tile in tile_rows(tiles_of_split(tile_index, "train")):
        labels = np.array([int(tile[name]) for name in classes])
        heatmaps = np.stack([load_partition(cams, cam_key(name, tile["tile_id"]), "cams") for name in classes])
        pred = cam_threshold_mask(heatmaps, labels, threshold)
        target = load_partition(tile_masks, tile["tile_id"], "tile_masks")
        pooled.update(pred, target)
        by_source[tile["source"]].update(pred, target)
    result = _summarise(pooled, by_source, _class_names(classes))
    logger.info("cam_threshold (T=%d): F1 %.3f IoU %.3f", threshold, result["f1"], result["iou"])
    return result


def evaluate_pseudo_labels(
    pseudo_masks: Partitions, tile_masks: Partitions, tile_index: pd.DataFrame, classes: list[str]
) -> dict[str, Any]:
    """Metrics of the pseudo-masks on every train tile (ignore counts as background)."""
    pooled, by_source = _accumulators(classes)
    for tile in tiles_of_split(tile_index, "train").itertuples(index=False):
        pred = load_partition(pseudo_masks, tile.tile_id, "pseudo_masks").copy()
        pred[pred == IGNORE_INDEX] = 0
        target = load_partition(tile_masks, tile.tile_id, "tile_masks")
        pooled.update(pred, target)
        by_source[tile.source].update(pred, target)
    result = _summarise(pooled, by_source, _class_names(classes))
    logger.info("pseudo_labels: F1 %.3f IoU %.3f", result["f1"], result["iou"])
    return result


def scene_ground_truth(tile_masks: Partitions, scene_tiles: pd.DataFrame, height: int, width: int) -> np.ndarray:
    """A test scene's mask at its original size, stitched from its non-overlapping tile masks."""
    pieces = (
        (TileWindow(t.row, t.col, t.height, t.width), load_partition(tile_masks, t.tile_id, "tile_masks"))
        for t in scene_tiles.itertuples(index=False)
    )
    stitched = stitch_mean(pieces, height, width)
    if np.isnan(stitched).any():
        raise ValueError("test tiles do not cover their scene: rerun data_preparation")
    return stitched.astype(np.uint8)


def evaluate_predictions(
    predictions: Partitions, tile_masks: Partitions, tile_index: pd.DataFrame, scenes: pd.DataFrame, classes: list[str]
) -> dict[str, Any]:
    """Metrics of the stitched predictions of every test scene, at original size."""
    pooled, by_source = _accumulators(classes)
    test_tiles = tiles_of_split(tile_index, "test")
    for scene in scenes[scenes["split"] == "test"].itertuples(index=False):
        target = scene_ground_truth(
            tile_masks, test_tiles[test_tiles["scene_id"] == scene.scene_id], scene.height, scene.width
        )
        stored = load_partition(predictions, scene.scene_id, "predictions")
        if stored.shape != target.shape:
            raise ValueError(f"prediction of {scene.scene_id} is {stored.shape}, its scene is {target.shape}")
        pred = decode_prediction(stored, len(classes))
        pooled.update(pred, target)
        by_source[scene.source].update(pred, target)
    result = _summarise(pooled, by_source, _class_names(classes))
    logger.info("prediction: F1 %.3f IoU %.3f", result["f1"], result["iou"])
    return result


def flatten_for_mlflow(stage_metrics: dict[str, dict]) -> dict[str, dict[str, float]]:
    """`<stage>.<metric>` and `<stage>.<source>.<metric>` entries for kedro-mlflow."""
    flat = {}
    for stage, result in stage_metrics.items():
        for key in MLFLOW_METRICS:
            flat[f"{stage}.{key}"] = {"value": float(result[key]), "step": 0}
        for source, sub in result.get("per_source", {}).items():
            for key in MLFLOW_METRICS:
                flat[f"{stage}.{source}.{key}"] = {"value": float(sub[key]), "step": 0}
    return flat


def collect_metrics(
    cam_threshold: dict, pseudo_labels: dict, prediction: dict
) -> tuple[dict[str, dict], dict[str, dict[str, float]]]:
    """The `metrics` report {stage: metrics} and its flat MLflow form."""
    report = {"cam_threshold": cam_threshold, "pseudo_labels": pseudo_labels, "prediction": prediction}
    for stage in STAGES:
        logger.info("%-14s OA %.4f  P %.4f  R %.4f  F1 %.4f  IoU %.4f", stage,
                    *(report[stage][k] for k in ("oa", "precision", "recall", "f1", "iou")))
    return report, flatten_for_mlflow(report)


def plot_stage_comparison(metrics: dict[str, dict]) -> Figure:
    """OA, precision, recall, F1 and IoU per stage (APSAM Table I as bars)."""
    return stage_comparison(metrics)


def plot_sample_panels(
    tiles: Partitions, tile_masks: Partitions, cams: Partitions, prompts: pd.DataFrame,
    pseudo_masks: Partitions, tile_index: pd.DataFrame, reporting: dict, classes: list[str],
) -> Figure:
    """APSAM Fig. 4 panels for a seeded sample of positive train tiles (first class).

    Columns: image, ground truth, CAM with its boxes and points, pseudo-mask.
    """
    name = classes[0]
    positive = tiles_of_split(tile_index, "train")
    positive = positive[positive[name] == 1]
    n_samples = min(int(reporting["n_sample_tiles"]), len(positive))
    chosen = positive.sample(n=n_samples, random_state=int(reporting["sample_seed"])).sort_values("tile_id")
    samples = [
        {
            "tile_id": tile_id,
            "image": load_partition(tiles, tile_id, "tiles"),
            "gt": load_partition(tile_masks, tile_id, "tile_masks"),
            "cam": load_partition(cams, cam_key(name, tile_id), "cams"),
            "prompts": prompts[(prompts["tile_id"] == tile_id) & (prompts["class_id"] == 1)],
            "pseudo": load_partition(pseudo_masks, tile_id, "pseudo_masks"),
            "prediction": None,
        }
        for tile_id in chosen["tile_id"]
    ]
    return sample_panels(samples)
