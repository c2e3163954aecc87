"""Nodes of localization: fit the configured localizer on image-level labels, write the `cams`.

`localization.method` picks the localizer (learning/localizers.py): `mil` (pixel MIL, the
weight-free default), `cam_classifier` (APSAM eq. 1, for pretrained backbones) or `clip` (seed
003 eq. 9; reads `text_prototypes`, which every node here takes as an optional input: an empty
table until `kedro run --pipeline text_prototype_kb` wrote it). All write the same contract: a uint8 heatmap 0..255 per tile and class, 0 over the padding of border tiles.
`localization.usr` / `localization.vpe` (seed 003 §3.5, off by default) refine any localizer's
heatmaps with its own features (learning/cam_refinement.py).

`compute.backend: dask` (compute/): `generate_cams` makes the heatmaps of `mil` and `cam_classifier` as
Dask tasks, the same batches as here, each worker loading the localizer once. `clip` (a frozen CLIP
from a local checkpoint) and USR / VPE (VPE learns its prototypes over all train tiles first) run here,
on the driver, as does `score_classifier`; the log says so.
"""

from __future__ import annotations

import logging
import time
from functools import partial

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from wsss_project.compute.backend import WorkerModel, task_spans, uses_dask
from wsss_project.compute.cluster import tile_mapper
from wsss_project.contracts import SPLITS, TRAIN_SPLIT, cam_key
from wsss_project.learning.cam_refinement import CamRefiner, refinement_enabled
from wsss_project.learning.clip_cams import CONTEXT_KEY, run_context
from wsss_project.learning.localizers import localizer_for
from wsss_project.pipelines.training_records import history_outputs
from wsss_project.tile_data import Partitions, stack_tiles, tiles_of_split
from wsss_project.utils.device import resolve_device
from wsss_project.utils.fingerprint import model_fingerprint
from wsss_project.validation.inputs import check_learnable_labels

logger = logging.getLogger(__name__)

# Localizers whose heatmaps Dask workers make; clip loads its frozen CLIP per call, so it stays on the driver.
DISTRIBUTED_METHODS = ("mil", "cam_classifier")


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
        heatmaps, features, attentions = localizer.heatmaps_and_refinement_features(
            model, images, _valid_sizes(chunk), localization, torch_device)
        refiner.learn_from_batch(heatmaps, features, _valid_sizes(chunk), chunk[classes].to_numpy(), attentions)
    refiner.check_prototypes(classes)
    return refiner


def generate_cams(
    tiles: Partitions, tile_index: pd.DataFrame, cam_model: dict, localization: dict, classes: list[str], device: str,
    text_prototypes: pd.DataFrame | None = None, text_prototype_kb: dict | None = None, compute: dict | None = None,
) -> dict[str, np.ndarray]:
    """A 0..255 heatmap for every tile (train and test, for figures) and class, keyed `<class>/<tile_id>`.

    compute: the `compute` parameters (None = local); with `backend: dask` see the module docstring.
    """
    localization = _with_context(localization, classes, text_prototypes, text_prototype_kb)
    if uses_dask(compute) and _distributable(localization):
        return _cams_on_cluster(tiles, tile_index, cam_model, localization, classes, device, compute)
    localizer, model, torch_device = _load_model(cam_model, localization, len(classes), device)
    refiner = _refiner(tiles, tile_index, localizer, model, localization, classes, torch_device)
    batch = int(localization["inference_batch_size"])
    ordered = tile_index.sort_values("tile_id").reset_index(drop=True)
    cams, started = {}, time.perf_counter()
    for start in range(0, len(ordered), batch):
        chunk = ordered.iloc[start : start + batch]
        images = stack_tiles(tiles, chunk["tile_id"].tolist())
        if refiner is None:
            heatmaps = localizer.heatmaps(model, images, _valid_sizes(chunk), localization, torch_device)
        else:
            heatmaps, features, attentions = localizer.heatmaps_and_refinement_features(
                model, images, _valid_sizes(chunk), localization, torch_device)
            heatmaps = refiner.refine_batch(heatmaps, features, _valid_sizes(chunk), attentions)
        for tile_id, per_class in zip(chunk["tile_id"], heatmaps, strict=True):
            for class_id, name in enumerate(classes):
                cams[cam_key(name, tile_id)] = per_class[class_id]
    logger.info("Computed heatmaps of %d tiles (%.1f tiles/s)", len(ordered), len(ordered) / (time.perf_counter() - started))
    if refiner is not None:
        refiner.log_rates()
    return cams


def _distributable(localization: dict) -> bool:
    """Whether Dask workers can make this localizer's heatmaps; if not, the log says why."""
    if localization["method"] not in DISTRIBUTED_METHODS:
        logger.warning("compute.backend is dask, but localization.method %s makes its heatmaps on the driver "
                       "(its frozen CLIP is loaded per call); only %s run on the cluster",
                       localization["method"], " and ".join(DISTRIBUTED_METHODS))
        return False
    if refinement_enabled(localization):
        logger.warning("compute.backend is dask, but localization.usr / localization.vpe refine the heatmaps on the "
                       "driver (VPE learns its prototypes over every train tile first)")
        return False
    return True


def _batch_heatmaps(localization: dict, batch: int, model: tuple, item: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """A worker's task: the heatmaps of consecutive tiles, in the local backend's batches of `batch`."""
    localizer, network, torch_device = model
    images, sizes = item
    return np.concatenate([
        localizer.heatmaps(network, images[s : s + batch], sizes[s : s + batch], localization, torch_device)
        for s in range(0, len(images), batch)
    ])


def _cams_on_cluster(
    tiles: Partitions, tile_index: pd.DataFrame, cam_model: dict, localization: dict, classes: list[str], device: str,
    compute: dict,
) -> dict[str, np.ndarray]:
    """generate_cams as Dask tasks of `compute.tiles_per_task` tiles (whole inference batches), merged in tile-id order."""
    batch = int(localization["inference_batch_size"])
    ordered = tile_index.sort_values("tile_id").reset_index(drop=True)
    spans = task_spans(len(ordered), batch, int(compute["tiles_per_task"]))
    settings = {key: value for key, value in localization.items() if key != CONTEXT_KEY}
    model = WorkerModel(
        model_fingerprint("localizer", cam_model, {**settings, "n_classes": len(classes), "device": device}),
        partial(_load_model, localization=localization, n_classes=len(classes), device=device), cam_model,
    )
    items = ((stack_tiles(tiles, ordered["tile_id"].iloc[a:b].tolist()), _valid_sizes(ordered.iloc[a:b]))
             for a, b in spans)
    cams, started = {}, time.perf_counter()
    with tile_mapper(compute) as mapper:
        results = mapper.map(model, partial(_batch_heatmaps, localization, batch), items)
        for (a, b), heatmaps in zip(spans, results, strict=True):
            for tile_id, per_class in zip(ordered["tile_id"].iloc[a:b], heatmaps, strict=True):
                for class_id, name in enumerate(classes):
                    cams[cam_key(name, tile_id)] = per_class[class_id]
    logger.info("Computed heatmaps of %d tiles as %d Dask tasks (%.1f tiles/s)", len(ordered), len(spans),
                len(ordered) / (time.perf_counter() - started))
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
