"""Nodes of localization: train the CAM classifier (APSAM eq. 1) and compute CAM heatmaps."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from wsss_project.learning.cam_training import (
    build_cam_classifier,
    compute_cams,
    predict_tile_probabilities,
    train_cam_classifier,
)
from wsss_project.pipelines.training_records import history_outputs
from wsss_project.tile_data import Partitions, cam_key, stack_tiles, tiles_of_split
from wsss_project.utils.device import resolve_device

logger = logging.getLogger(__name__)


def train_cam_model(
    tiles: Partitions, tile_index: pd.DataFrame, localization: dict, classes: list[str], seed: int, device: str
) -> tuple[dict, pd.DataFrame, dict]:
    """Train the classifier on the train tiles' image-level labels only (never on masks)."""
    train = tiles_of_split(tile_index, "train")
    labels = train[classes].to_numpy(dtype=np.float32)
    logger.info(
        "Training the CAM classifier on %d tiles (%s positive per class)",
        len(train), labels.sum(axis=0).astype(int).tolist(),
    )
    images = stack_tiles(tiles, train["tile_id"].tolist())
    model, history = train_cam_classifier(images, labels, {**localization, "seed": seed}, resolve_device(device))
    table, curves = history_outputs(history, "localization")
    return {k: v.cpu() for k, v in model.state_dict().items()}, table, curves


def restrict_to_scene(heatmap: np.ndarray, height: int, width: int) -> np.ndarray:
    """Zero a border tile's CAM over its padding and rescale the scene part to peak at 255.

    The reflected padding is not scene: on landslide_real the classifier fired along padded
    borders, and APG turned those stripes into prompts.
    """
    if heatmap.shape == (height, width):
        return heatmap
    out = np.zeros_like(heatmap)
    part = heatmap[:height, :width].astype(np.float32)
    peak = part.max()
    if peak > 0:
        out[:height, :width] = np.round(part / peak * 255.0).astype(np.uint8)
    return out


def generate_cams(
    tiles: Partitions, tile_index: pd.DataFrame, cam_model: dict, localization: dict, classes: list[str], device: str
) -> dict[str, np.ndarray]:
    """A 0..255 CAM heatmap for every tile and class, keyed `<class>/<tile_id>`."""
    torch_device = resolve_device(device)
    model = build_cam_classifier(len(classes), localization, load_pretrained=False)
    model.load_state_dict(cam_model)
    model.to(torch_device).eval()
    batch = int(localization["inference_batch_size"])
    ordered = tile_index.sort_values("tile_id")
    tile_ids = ordered["tile_id"].tolist()
    valid = dict(zip(tile_ids, zip(ordered["height"], ordered["width"], strict=True), strict=True))
    cams, started = {}, time.perf_counter()
    for start in range(0, len(tile_ids), batch):
        chunk = tile_ids[start : start + batch]
        heatmaps = compute_cams(model, stack_tiles(tiles, chunk), localization, torch_device, batch)
        for tile_id, per_class in zip(chunk, heatmaps, strict=True):
            for class_id, name in enumerate(classes):
                cams[cam_key(name, tile_id)] = restrict_to_scene(per_class[class_id], *valid[tile_id])
    logger.info("Computed CAMs of %d tiles (%.1f tiles/s)", len(tile_ids), len(tile_ids) / (time.perf_counter() - started))
    return cams


def score_classifier(
    tiles: Partitions, tile_index: pd.DataFrame, cam_model: dict, localization: dict, classes: list[str], device: str
) -> dict[str, dict]:
    """Tile-level ROC AUC and accuracy of the classifier per split and class (image-level labels only).

    CAM quality is bounded by how well the classifier separates positive from negative tiles;
    the test split shows whether it generalises to unseen scenes.
    """
    torch_device = resolve_device(device)
    model = build_cam_classifier(len(classes), localization, load_pretrained=False)
    model.load_state_dict(cam_model)
    model.to(torch_device)
    batch = int(localization["inference_batch_size"])
    scores = {}
    for split in ("train", "test"):
        rows = tiles_of_split(tile_index, split)
        if rows.empty:
            continue
        probs = np.concatenate([
            predict_tile_probabilities(model, stack_tiles(tiles, rows["tile_id"].iloc[s : s + batch].tolist()),
                                       localization, torch_device, batch)
            for s in range(0, len(rows), batch)
        ])
        for k, name in enumerate(classes):
            labels = rows[name].to_numpy()
            auc = roc_auc_score(labels, probs[:, k]) if 0 < labels.sum() < len(labels) else float("nan")
            accuracy = float(((probs[:, k] >= 0.5) == labels).mean())
            scores[f"localization.{split}.{name}.auc"] = {"value": float(auc), "step": 0}
            scores[f"localization.{split}.{name}.accuracy"] = {"value": accuracy, "step": 0}
            logger.info("Classifier on %s tiles, %s: AUC %.3f, accuracy %.3f", split, name, auc, accuracy)
    return scores
