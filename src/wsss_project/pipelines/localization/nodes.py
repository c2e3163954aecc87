"""Nodes of localization: fit the configured localizer on image-level labels, write the `cams`.

`localization.method` picks the localizer (learning/localizers.py): `mil` (pixel MIL, the
weight-free default), `cam_classifier` (APSAM eq. 1, for pretrained backbones) or `clip` (seed
003 eq. 9; reads `text_prototypes`, which every node here takes as an optional input: an empty
table until `kedro run --pipeline text_prototype_kb` wrote it). All write the same contract: a uint8 heatmap 0..255 per tile and class, 0 over the padding of border tiles.
`localization.usr` / `localization.vpe` (seed 003 §3.5, off by default) refine any localizer's
heatmaps with its own features (learning/cam_refinement.py).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from wsss_project.contracts import SPLITS, TRAIN_SPLIT, cam_key
from wsss_project.learning.cam_refinement import CamRefiner, refinement_enabled
from wsss_project.learning.clip_cams import CONTEXT_KEY, run_context
from wsss_project.learning.localizers import localizer_for
from wsss_project.pipelines.training_records import history_outputs
from wsss_project.tile_data import Partitions, stack_tiles, tiles_of_split
from wsss_project.utils.device import resolve_device
from wsss_project.validation.inputs import check_learnable_labels

logger = logging.getLogger(__name__)


def _valid_sizes(rows: pd.DataFrame) -> np.ndarray:
    """(N, 2) valid (height, width) of each tile: the rest of a border tile is reflected padding."""
    return rows[["height", "width"]].to_numpy(dtype=np.int64)


def _with_context(
    localization: dict, classes: list[str], text_prototypes: pd.DataFrame | None, text_prototype_kb: dict | None
) -> dict:
    """The localization parameters plus what a localizer may read beside them (learning/clip_cams.py)."""
    return {**localization, CONTEXT_KEY: run_context(classes, text_prototypes, text_prototype_kb)}


def train_cam_model(
    tiles: Partitions, tile_index: pd.DataFrame, localization: dict, classes: list[str], seed: int, device: str,
    text_prototypes: pd.DataFrame | None = None, text_prototype_kb: dict | None = None,
) -> tuple[dict, pd.DataFrame, dict]:
    """Fit the localizer on the train tiles' image-level labels only (never on masks)."""
    localization = _with_context(localization, classes, text_prototypes, text_prototype_kb)
    localizer = localizer_for(localization)
    check_learnable_labels(tile_index, classes)
    train = tiles_of_split(tile_index, TRAIN_SPLIT)
    labels = train[classes].to_numpy(dtype=np.float32)
    logger.info(
        "Fitting localizer %s on %d tiles (%s positive per class)",
        localization["method"], len(train), labels.sum(axis=0).astype(int).tolist(),
    )
    images = stack_tiles(tiles, train["tile_id"].tolist())
    model, history = localizer.fit(
        images, labels, _valid_sizes(train), {**localization, "seed": seed}, resolve_device(device)
    )
    table, curves = history_outputs(history, "localization")
    return {k: v.cpu() for k, v in model.state_dict().items()}, table, curves


def _load_model(cam_model: dict, localization: dict, n_classes: int, device: str):
    localizer = localizer_for(localization)
    torch_device = resolve_device(device)
    model = localizer.build(n_classes, localization)
    model.load_state_dict(cam_model)
    return localizer, model.to(torch_device).eval(), torch_device


def _refiner(
    tiles: Partitions, tile_index: pd.DataFrame, localizer, model, localization: dict, classes: list[str], torch_device
) -> CamRefiner | None:
    """The USR / VPE refiner (None when both are off), VPE's prototypes learnt from the train tiles first."""
    if not refinement_enabled(localization):
        return None
    refiner = CamRefiner(localization["usr"], localization["vpe"], len(classes))
    if not refiner.uses_prototypes:
        return refiner
    batch = int(localization["inference_batch_size"])
    train = tiles_of_split(tile_index, TRAIN_SPLIT)
    for start in range(0, len(train), batch):
        chunk = train.iloc[start : start + batch]
        images = stack_tiles(tiles, chunk["tile_id"].tolist())
        heatmaps = localizer.heatmaps(model, images, _valid_sizes(chunk), localization, torch_device)
        features, attentions = localizer.refinement_features(model, images, localization, torch_device)
        refiner.learn_from_batch(heatmaps, features, _valid_sizes(chunk), chunk[classes].to_numpy(), attentions)
    refiner.check_prototypes(classes)
    return refiner


def generate_cams(
    tiles: Partitions, tile_index: pd.DataFrame, cam_model: dict, localization: dict, classes: list[str], device: str,
    text_prototypes: pd.DataFrame | None = None, text_prototype_kb: dict | None = None,
) -> dict[str, np.ndarray]:
    """A 0..255 heatmap for every tile (train and test, for figures) and class, keyed `<class>/<tile_id>`."""
    localization = _with_context(localization, classes, text_prototypes, text_prototype_kb)
    localizer, model, torch_device = _load_model(cam_model, localization, len(classes), device)
    refiner = _refiner(tiles, tile_index, localizer, model, localization, classes, torch_device)
    batch = int(localization["inference_batch_size"])
    ordered = tile_index.sort_values("tile_id").reset_index(drop=True)
    cams, started = {}, time.perf_counter()
    for start in range(0, len(ordered), batch):
        chunk = ordered.iloc[start : start + batch]
        images = stack_tiles(tiles, chunk["tile_id"].tolist())
        heatmaps = localizer.heatmaps(model, images, _valid_sizes(chunk), localization, torch_device)
        if refiner is not None:
            features, attentions = localizer.refinement_features(model, images, localization, torch_device)
            heatmaps = refiner.refine_batch(heatmaps, features, _valid_sizes(chunk), attentions)
        for tile_id, per_class in zip(chunk["tile_id"], heatmaps, strict=True):
            for class_id, name in enumerate(classes):
                cams[cam_key(name, tile_id)] = per_class[class_id]
    logger.info("Computed heatmaps of %d tiles (%.1f tiles/s)", len(ordered), len(ordered) / (time.perf_counter() - started))
    if refiner is not None:
        refiner.log_rates()
    return cams


def score_classifier(
    tiles: Partitions, tile_index: pd.DataFrame, cam_model: dict, localization: dict, classes: list[str], device: str,
    text_prototypes: pd.DataFrame | None = None, text_prototype_kb: dict | None = None,
) -> dict[str, dict]:
    """Tile-level ROC AUC and accuracy of the localizer per split and class (image-level labels only).

    Localization is bounded by how well the model separates positive from negative tiles; the
    test split shows whether that carries over to unseen scenes.
    """
    localization = _with_context(localization, classes, text_prototypes, text_prototype_kb)
    localizer, model, torch_device = _load_model(cam_model, localization, len(classes), device)
    batch = int(localization["inference_batch_size"])
    scores = {}
    for split in SPLITS:
        rows = tiles_of_split(tile_index, split)
        if rows.empty:
            continue
        probs = np.concatenate([
            localizer.tile_probabilities(
                model, stack_tiles(tiles, chunk["tile_id"].tolist()), _valid_sizes(chunk), localization, torch_device
            )
            for chunk in (rows.iloc[s : s + batch] for s in range(0, len(rows), batch))
        ])
        for k, name in enumerate(classes):
            labels = rows[name].to_numpy()
            auc = roc_auc_score(labels, probs[:, k]) if 0 < labels.sum() < len(labels) else float("nan")
            accuracy = float(((probs[:, k] >= 0.5) == labels).mean())
            scores[f"localization.{split}.{name}.auc"] = {"value": float(auc), "step": 0}
            scores[f"localization.{split}.{name}.accuracy"] = {"value": accuracy, "step": 0}
            logger.info("Localizer on %s tiles, %s: AUC %.3f, accuracy %.3f", split, name, auc, accuracy)
    return scores
