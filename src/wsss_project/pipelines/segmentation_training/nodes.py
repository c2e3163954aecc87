"""Nodes of segmentation_training: train the segmenter on tile masks (the pseudo-masks here; the true masks in
supervised_reference); predict and stitch test scenes.

The segmenter is `segmentation_training.model`: `resunet` (default) or `clip_decoder` (seed 003's adapter and
decoder on the frozen CLIP of `text_prototype_kb.clip`; learning/clip_decoder_training.py). Both save their
state_dict as `segmentation_model` (clip_decoder's holds the adapter and decoder only, and names the CLIP it
needs) and predict every test scene in the same `predictions` contract.

ALPS pre-training (`segmentation_training.pretrain: alps`, seed 002): `cluster_regions` gives every
train tile a cluster map (learning/alps.py), `pretrain_segmentation_model` trains the ResUNet with
an N-way head on them, and `train_segmentation_model` starts from that body. Kedro builds pipelines
before it reads parameters, so the two ALPS nodes are declared in every run; with `pretrain: none`
(the default) each returns its empty result at once (no maps, an empty table, an empty state_dict:
"no pre-training") and says so in the log, and the training starts from its seeded random weights
exactly as before. Declaring them (rather than a pipeline of its own) keeps the switch a parameter:
`--params segmentation_training.pretrain=alps` works on the default pipeline, `kedro run --pipeline
segmentation_training` and the benchmarks alike, and no setting can be on while its nodes are absent.

`compute.backend: dask` (compute/): `predict_scenes` computes the ResUNet's tile probabilities as Dask
tasks (whole inference batches, each worker loading the model once); stitching stays on the driver.
The clip_decoder predicts on the driver (its frozen CLIP), as the log says; training is always local.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import torch

from wsss_project.compute.backend import DaskMapper, LocalMapper, WorkerModel, task_spans
from wsss_project.compute.cluster import tile_mapper
from wsss_project.contracts import (
    BINARY_FOREGROUND_VALUE,
    COMPONENTS_KEPT,
    COMPONENTS_REMOVED,
    IGNORE_INDEX,
    PIXELS_REMOVED,
    REFINEMENT_PREFIX,
    TEST_SPLIT,
    TRAIN_SPLIT,
    cam_key,
)
from wsss_project.errors import UserInputError
from wsss_project.imagery.tiling import TileWindow, mark_outside_scene, stitch_mean
from wsss_project.learning import alps
from wsss_project.learning.clip_decoder_training import (
    build_clip_decoder,
    check_same_backbone,
    load_frozen_clip,
    predict_clip_probabilities,
    train_clip_decoder,
)
from wsss_project.learning.segmentation_training import (
    CLIP_DECODER,
    SEGMENTATION_MODELS,
    build_resunet,
    predict_probabilities,
    pretrain_resunet,
    train_resunet,
)
from wsss_project.pipelines.evaluation.nodes import decode_prediction
from wsss_project.pipelines.training_records import history_outputs
from wsss_project.segmenters.prediction_refinement import (
    REFINE_NONE,
    RefinementCounts,
    refine_by_ios,
)
from wsss_project.tile_data import (
    Partitions,
    load_partition,
    stack_tiles,
    stitch_scene,
    tile_rows,
    tiles_of_split,
)
from wsss_project.utils.device import resolve_device
from wsss_project.utils.fingerprint import model_fingerprint

logger = logging.getLogger(__name__)

MASKS_DATASET = "pseudo_masks"  # what the weakly supervised model learns from
HISTORY_PREFIX = "segmentation_training"  # of its MLflow training curves
PRETRAINING_PREFIX = "segmentation_pretraining"  # of the ALPS pre-training's MLflow curves
CLUSTER_MAPS_DATASET = "alps_cluster_maps"


def ignore_outside_scene(masks: np.ndarray, tiles: pd.DataFrame) -> np.ndarray:
    """The (N, H, W) tile masks with every pixel past each tile's valid height and width set to 255.

    tiles: the tile_index rows of the masks, in the same order. Padding is not supervision.
    """
    return np.stack([
        mark_outside_scene(mask, TileWindow(0, 0, int(tile["height"]), int(tile["width"])), IGNORE_INDEX)
        for mask, tile in zip(masks, tile_rows(tiles), strict=True)
    ])


def cluster_regions(
    tiles: Partitions, tile_index: pd.DataFrame, cam_model: dict, segmentation_training: dict,
    sam_labeling: dict, localization: dict, classes: list[str], seed: int, device: str,
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """ALPS cluster maps of every train tile and the cluster table (`pretrain: alps`; else empty).

    Regions: `sam_labeling.regions` (the same source, area gate and settings as region voting);
    features: SAM's embedding for `sam_auto`, else the trained localizer's (`cam_model`). A map is
    uint8 cluster ids 0..N-1, 255 where no region lies and outside the scene. Image pixels only:
    neither masks nor image-level labels are read.
    """
    if segmentation_training["pretrain"] != alps.PRETRAIN_ALPS:
        logger.info("segmentation_training.pretrain is %s: no ALPS cluster maps", segmentation_training["pretrain"])
        return {}, alps.empty_cluster_table()
    torch_device = resolve_device(device)
    source, features = alps.build_alps_sources(sam_labeling, localization, cam_model, len(classes), torch_device)
    train = tile_rows(tiles_of_split(tile_index, TRAIN_SPLIT))
    tile_list = [(t["tile_id"], load_partition(tiles, t["tile_id"], "tiles"), (int(t["height"]), int(t["width"])))
                 for t in train]
    return alps.cluster_regions(tile_list, source, features, segmentation_training["alps"], seed)


def pretrain_segmentation_model(
    tiles: Partitions, cluster_maps: Partitions, tile_index: pd.DataFrame, segmentation_training: dict,
    seed: int, device: str,
) -> tuple[dict, dict]:
    """ALPS pre-training: ResUNet with an `alps.n_clusters`-way head on the cluster maps of every train
    tile; returns its body (every tensor but the output layer) and its MLflow curves.

    With `pretrain: none` it returns an empty state_dict (no pre-training) and no curves.
    """
    if segmentation_training["pretrain"] != alps.PRETRAIN_ALPS:
        return {}, {}
    train = tiles_of_split(tile_index, TRAIN_SPLIT)
    tile_ids = train["tile_id"].tolist()
    images = stack_tiles(tiles, tile_ids)
    maps = ignore_outside_scene(stack_tiles(cluster_maps, tile_ids, CLUSTER_MAPS_DATASET), train)
    params = {**segmentation_training, "seed": seed}
    model, history = pretrain_resunet(images, maps, params, resolve_device(device))
    _, curves = history_outputs(history, PRETRAINING_PREFIX)
    return {k: v.cpu() for k, v in model.body_state_dict().items()}, curves


def segmentation_model_kind(segmentation_training: dict) -> str:
    """`segmentation_training.model`, checked (nodes may run outside a validated `kedro run`)."""
    kind = segmentation_training["model"]
    if kind not in SEGMENTATION_MODELS:
        raise UserInputError(f"parameter `segmentation_training.model` must be one of {list(SEGMENTATION_MODELS)}, got {kind!r}")
    return kind


def train_segmentation_model(
    tiles: Partitions, masks: Partitions, tile_index: pd.DataFrame,
    segmentation_training: dict, classes: list[str], seed: int, device: str,
    text_prototype_kb: dict | None = None, pretrained_body: dict | None = None,
    masks_dataset: str = MASKS_DATASET, history_prefix: str = HISTORY_PREFIX,
) -> tuple[dict, pd.DataFrame, dict]:
    """Train `segmentation_training.model` on the train tiles' `masks` (255 = ignore, and so is every pixel
    outside the scene).

    segmentation_training passes the pseudo-masks (ground truth is never read there);
    supervised_reference passes the true `tile_masks`. masks_dataset names them in logs and
    errors; history_prefix prefixes the MLflow training curves. text_prototype_kb: its `clip` section
    names the frozen CLIP of `model: clip_decoder` (unread by the ResUNet). pretrained_body: the ALPS
    pre-trained body (`pretrain_segmentation_model`, ResUNet only); empty or None = seeded random weights.
    """
    kind = segmentation_model_kind(segmentation_training)
    train = tiles_of_split(tile_index, TRAIN_SPLIT)
    tile_ids = train["tile_id"].tolist()
    images = stack_tiles(tiles, tile_ids)
    labels = ignore_outside_scene(stack_tiles(masks, tile_ids, masks_dataset), train)
    logger.info(
        "Training %s on the `%s` of %d train tiles (%.1f%% foreground, %.1f%% ignored)",
        kind, masks_dataset, len(tile_ids), 100 * np.mean((labels > 0) & (labels < IGNORE_INDEX)),
        100 * np.mean(labels == IGNORE_INDEX),
    )
    torch_device = resolve_device(device)
    if kind == CLIP_DECODER:
        if pretrained_body:
            raise UserInputError("segmentation_training.pretrain: alps pre-trains the ResUNet only; "
                                 "segmentation_training.model is clip_decoder")
        params = segmentation_training[CLIP_DECODER]
        frozen = load_frozen_clip(text_prototype_kb, params, torch_device)
        model, history = train_clip_decoder(
            frozen.features_fn(int(params["feature_batch_size"])), images, labels, len(classes) + 1, params, seed,
            torch_device, frozen.backbone,
        )
    else:
        params = {**segmentation_training, "seed": seed}
        model, history = train_resunet(images, labels, len(classes) + 1, params, torch_device, pretrained_body)
    table, curves = history_outputs(history, history_prefix)
    return {k: v.cpu() if hasattr(v, "cpu") else v for k, v in model.state_dict().items()}, table, curves


def encode_prediction(class_index: np.ndarray, n_classes: int) -> np.ndarray:
    """Stored form of a prediction: 0/255 for a binary task, class indices otherwise."""
    if n_classes == 1:
        return np.where(class_index > 0, BINARY_FOREGROUND_VALUE, 0).astype(np.uint8)
    return class_index.astype(np.uint8)


def _worker_resunet(segmentation_training: dict, n_outputs: int, device: str, segmentation_model: dict) -> tuple:
    """A Dask worker's ResUNet (device `auto` resolved there), built once per worker."""
    torch_device = resolve_device(device)
    model = build_resunet(n_outputs, segmentation_training)
    model.load_state_dict(segmentation_model)
    return model.to(torch_device).eval(), torch_device


def _resunet_batch(segmentation_training: dict, batch: int, model: tuple, images: np.ndarray) -> np.ndarray:
    """A worker's task: softmax probabilities of consecutive tiles, in the local backend's batches."""
    network, torch_device = model
    return predict_probabilities(network, images, segmentation_training, torch_device, batch)


@dataclass(frozen=True)
class ClusterProbabilities:
    """The ResUNet's tile probabilities on a Dask cluster: called on (N, H, W, 3) tiles like the local
    function, in tasks of whole inference batches; `map` streams many calls (scenes) through the
    workers at once, results in call order."""

    mapper: DaskMapper
    model: WorkerModel
    segmentation_training: dict
    tiles_per_task: int

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return next(self.map([images]))

    def map(self, image_sets: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        batch = int(self.segmentation_training["inference_batch_size"])
        tasks_per_set: deque[int] = deque()  # filled as the mapper reads ahead, read as results come back

        def tasks() -> Iterator[np.ndarray]:
            for images in image_sets:
                spans = task_spans(len(images), batch, self.tiles_per_task)
                if not spans:
                    raise ValueError("no tiles to predict")
                tasks_per_set.append(len(spans))
                yield from (images[a:b] for a, b in spans)

        results = self.mapper.map(self.model, partial(_resunet_batch, self.segmentation_training, batch), tasks())
        for first in results:
            yield np.concatenate([first, *(next(results) for _ in range(tasks_per_set.popleft() - 1))])


def probabilities_of(
    probabilities: Callable[[np.ndarray], np.ndarray] | ClusterProbabilities, image_sets: Iterable[np.ndarray],
) -> Iterator[np.ndarray]:
    """probabilities(images) of each set, in order; on a cluster several sets are in flight at once."""
    if isinstance(probabilities, ClusterProbabilities):
        return probabilities.map(image_sets)
    return map(probabilities, image_sets)


def tile_probabilities(
    segmentation_model: dict, segmentation_training: dict, n_outputs: int, device: torch.device,
    text_prototype_kb: dict | None = None, mapper: LocalMapper | DaskMapper | None = None,
    compute: dict | None = None, device_name: str = "auto",
) -> Callable[[np.ndarray], np.ndarray] | ClusterProbabilities:
    """The saved `segmentation_model` as a function: (N, H, W, 3) uint8 tiles -> (N, n_outputs, H, W) softmax.

    clip_decoder reloads the frozen CLIP of `text_prototype_kb.clip` and refuses one other than the CLIP,
    blocks and input size it was trained with (the state_dict names them). With a DaskMapper (and its
    `compute` parameters) the ResUNet runs on the cluster's workers, each building it for `device_name`.
    """
    batch = int(segmentation_training["inference_batch_size"])
    tta = bool(segmentation_training["tta_flips"])
    kind = segmentation_model_kind(segmentation_training)
    if isinstance(mapper, DaskMapper) and kind != CLIP_DECODER:
        model = WorkerModel(
            model_fingerprint("resunet", segmentation_model, {**segmentation_training, "n_outputs": n_outputs,
                                                              "device": device_name}),
            partial(_worker_resunet, segmentation_training, n_outputs, device_name), segmentation_model,
        )
        return ClusterProbabilities(mapper, model, segmentation_training, int(compute["tiles_per_task"]))
    if isinstance(mapper, DaskMapper):
        logger.warning("compute.backend is dask, but segmentation_training.model %s predicts on the driver "
                       "(its frozen CLIP); only the ResUNet runs on the cluster", kind)
    if kind == CLIP_DECODER:
        params = segmentation_training[CLIP_DECODER]
        frozen = load_frozen_clip(text_prototype_kb, params, device)
        check_same_backbone(segmentation_model.get("_extra_state", {}), frozen)
        decoder = build_clip_decoder(frozen.bundle.width, len(frozen.block_indices), n_outputs, params)
        decoder.load_state_dict(segmentation_model)
        decoder.to(device).eval()
        features = frozen.features_fn(int(params["feature_batch_size"]))
        return lambda images: predict_clip_probabilities(decoder, features, images, batch, tta)
    model = build_resunet(n_outputs, segmentation_training)
    model.load_state_dict(segmentation_model)
    model.to(device).eval()
    return lambda images: predict_probabilities(model, images, segmentation_training, device, batch)


def predict_scenes(
    tiles: Partitions, tile_index: pd.DataFrame, scenes: pd.DataFrame, segmentation_model: dict,
    segmentation_training: dict, classes: list[str], device: str, text_prototype_kb: dict | None = None,
    compute: dict | None = None,
) -> dict[str, np.ndarray]:
    """One mask per test scene at its original size: tile probabilities averaged, then argmax.

    compute: the `compute` parameters (None = local); with `backend: dask` the tile probabilities are
    computed on the cluster (see the module docstring).
    """
    with tile_mapper(compute) as mapper:
        probabilities = tile_probabilities(
            segmentation_model, segmentation_training, len(classes) + 1, resolve_device(device), text_prototype_kb,
            mapper, compute, device,
        )
        return _stitch_test_scenes(tiles, tile_index, scenes, probabilities, classes)


def _stitch_test_scenes(
    tiles: Partitions, tile_index: pd.DataFrame, scenes: pd.DataFrame,
    probabilities: Callable[[np.ndarray], np.ndarray] | ClusterProbabilities, classes: list[str],
) -> dict[str, np.ndarray]:
    """Each test scene's tiles through `probabilities`, stitched (mean over overlaps), argmax, encoded."""
    test_tiles = tiles_of_split(tile_index, TEST_SPLIT)
    test_scenes = list(scenes[scenes["split"] == TEST_SPLIT].itertuples(index=False))
    per_scene = [test_tiles[test_tiles["scene_id"] == scene.scene_id] for scene in test_scenes]
    # Lazy: a scene's tiles are read when its turn comes (on a cluster, a few scenes ahead).
    scene_probs = probabilities_of(probabilities, (stack_tiles(tiles, rows["tile_id"].tolist()) for rows in per_scene))
    predictions, started = {}, time.perf_counter()
    for scene, scene_tiles, probs in zip(test_scenes, per_scene, scene_probs, strict=True):
        windows = [TileWindow(t.row, t.col, t.height, t.width) for t in scene_tiles.itertuples(index=False)]
        # Channels last, so stitch_mean averages each class's probability over overlapping tiles.
        stitched = stitch_mean(zip(windows, probs.transpose(0, 2, 3, 1), strict=True), scene.height, scene.width)
        predictions[scene.scene_id] = encode_prediction(stitched.argmax(axis=2), len(classes))
    logger.info("Predicted %d test scenes (%.2f s/scene)", len(predictions),
                (time.perf_counter() - started) / max(len(predictions), 1))
    return predictions


def scene_heatmaps(cams: Partitions, scene_tiles: pd.DataFrame, classes: list[str], height: int, width: int) -> np.ndarray:
    """(C, height, width) uint8: each class's heatmap of a test scene, stitched from its test tiles."""
    return np.stack([
        stitch_scene(cams, scene_tiles, height, width, "cams", key_of=partial(cam_key, name)) for name in classes
    ])


def refine_predictions(
    predictions: dict[str, np.ndarray], cams: Partitions, tile_index: pd.DataFrame, scenes: pd.DataFrame,
    prompt_generation_resolved: dict, segmentation_training: dict, sam_labeling: dict, classes: list[str],
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, float]]]:
    """The test-scene predictions, refined by `segmentation_training.refine`, and the counts for MLflow.

    `none` returns the predictions as they are (and logs nothing); `ios` sets every predicted component
    whose IOS with the stitched heatmap > T is below `sam_labeling.ios.min_overlap` to background
    (segmenters/prediction_refinement.py).
    """
    # Imported here: the schema imports these pipeline modules. Its rules for the two keys read.
    from wsss_project.validation.schema import check_section

    for key, section, value in (("refine", "segmentation_training", segmentation_training.get("refine")),
                                ("ios", "sam_labeling", sam_labeling.get("ios"))):
        if value is None:
            raise KeyError(f"missing parameter `{section}.{key}`")
        check_section({key: value}, section, partial=True)
    if segmentation_training["refine"] == REFINE_NONE:
        return predictions, {}
    threshold = int(prompt_generation_resolved["threshold"])
    min_overlap = float(sam_labeling["ios"]["min_overlap"])
    test_tiles = tiles_of_split(tile_index, TEST_SPLIT)
    refined, counts = {}, RefinementCounts()
    for scene in scenes[scenes["split"] == TEST_SPLIT].itertuples(index=False):
        heatmaps = scene_heatmaps(
            cams, test_tiles[test_tiles["scene_id"] == scene.scene_id], classes, scene.height, scene.width
        )
        predicted = decode_prediction(load_partition(predictions, scene.scene_id, "predictions"), len(classes))
        class_index, scene_counts = refine_by_ios(predicted, heatmaps, threshold, min_overlap)
        refined[scene.scene_id] = encode_prediction(class_index, len(classes))
        counts = counts + scene_counts
    logger.info(
        "Refined %d test scenes with IOS >= %s against CAM > %d: kept %d components, set %d to background "
        "(%d pixels)", len(refined), min_overlap, threshold, counts.kept, counts.removed, counts.pixels_removed,
    )
    values = {COMPONENTS_KEPT: counts.kept, COMPONENTS_REMOVED: counts.removed, PIXELS_REMOVED: counts.pixels_removed}
    return refined, {f"{REFINEMENT_PREFIX}.{name}": {"value": float(v), "step": 0} for name, v in values.items()}
