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
tasks (whole inference batches, each worker loading the model once); writing the rasters stays on the driver.
The clip_decoder predicts on the driver (its frozen CLIP), as the log says; training is always local.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from wsss_project.compute.backend import DaskMapper, WorkerModel, task_spans, uses_dask
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
from wsss_project.datasets.scene_raster import (
    ArraySceneRaster,
    Georeference,
    SceneRaster,
    StreamedSceneRaster,
    as_scene_raster,
    scene_array,
)
from wsss_project.errors import UserInputError
from wsss_project.imagery.readers import GEOTIFF_SUFFIXES, read_valid_window, validate_rgb_bands
from wsss_project.imagery.tiling import TileWindow, mark_outside_scene
from wsss_project.learning import alps
from wsss_project.learning.clip_cams import CONTEXT_KEY, run_context
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
from wsss_project.pipelines.evaluation.nodes import decode_prediction, tile_window
from wsss_project.pipelines.training_records import history_outputs
from wsss_project.prediction_rasters import (
    classes_from_probabilities,
    probability_band_names,
    quantise_probabilities,
)
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
    text_prototype_kb: dict | None = None,
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """ALPS cluster maps of every train tile and the cluster table (`pretrain: alps`; else empty).

    Regions: `sam_labeling.regions` (the same source, area gate and settings as region voting);
    features: SAM's embedding for `sam_auto`, else the trained localizer's (`cam_model`). A map is
    uint8 cluster ids 0..N-1, 255 where no region lies and outside the scene. Image pixels only:
    neither masks nor image-level labels are read. text_prototype_kb: names the frozen CLIP (and DINOv2)
    whose features `localization.method: clip` pools (its saved model holds only the class embeddings).
    """
    if segmentation_training["pretrain"] != alps.PRETRAIN_ALPS:
        logger.info("segmentation_training.pretrain is %s: no ALPS cluster maps", segmentation_training["pretrain"])
        return {}, alps.empty_cluster_table()
    torch_device = resolve_device(device)
    localization = {**localization, CONTEXT_KEY: run_context(classes, None, text_prototype_kb)}
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
    """The ResUNet's tile probabilities on a Dask cluster: `map` streams (N, H, W, 3) tile stacks through
    the workers in tasks of whole inference batches, several stacks in flight, results in stack order."""

    mapper: DaskMapper
    model: WorkerModel
    segmentation_training: dict
    tiles_per_task: int

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


def tile_probabilities(
    segmentation_model: dict, segmentation_training: dict, n_outputs: int, device: torch.device,
    text_prototype_kb: dict | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """The saved `segmentation_model` as a function: (N, H, W, 3) uint8 tiles -> (N, n_outputs, H, W) softmax.

    clip_decoder reloads the frozen CLIP of `text_prototype_kb.clip` and refuses one other than the CLIP,
    blocks and input size it was trained with (the state_dict names them). On a Dask cluster the ResUNet
    runs as ClusterProbabilities instead (predict_scenes).
    """
    batch = int(segmentation_training["inference_batch_size"])
    tta = bool(segmentation_training["tta_flips"])
    kind = segmentation_model_kind(segmentation_training)
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


class _SceneProgress:
    """Logs each predicted scene with its rate: the work runs while the dataset writes, after the node returns."""

    def __init__(self, n_scenes: int) -> None:
        self.n_scenes, self.done, self.tiles, self.started = n_scenes, 0, 0, time.perf_counter()

    def scene_done(self, n_tiles: int) -> None:
        self.done, self.tiles = self.done + 1, self.tiles + n_tiles
        elapsed = time.perf_counter() - self.started
        logger.info("Predicted test scene %d/%d (%d tiles, %.1f tiles/s)", self.done, self.n_scenes, self.tiles,
                    self.tiles / max(elapsed, 1e-9))


def scene_validity(scene: dict, data: dict | None) -> Callable[[TileWindow], np.ndarray | None] | None:
    """Which pixels of a window of the scene hold data, read from its image (`image_path`, a GeoTIFF's
    mask by `data.folder.rgb_bands`, as data_preparation read it); None when the scene has no image
    file (synthetic) or its image carries no nodata (PNG/JPEG)."""
    image_path = scene.get("image_path")
    if not isinstance(image_path, str) or Path(image_path).suffix.lower() not in GEOTIFF_SUFFIXES:
        return None
    rgb_bands = validate_rgb_bands(((data or {}).get("folder") or {}).get("rgb_bands"))
    return lambda window: read_valid_window(image_path, rgb_bands, window)


def predict_scenes(
    tiles: Partitions, tile_index: pd.DataFrame, scenes: pd.DataFrame, segmentation_model: dict,
    segmentation_training: dict, classes: list[str], device: str, text_prototype_kb: dict | None = None,
    data: dict | None = None, compute: dict | None = None,
) -> dict[str, StreamedSceneRaster]:
    """The probability raster (`prediction_probabilities`, prediction_rasters.py) of every test scene at its
    original size, with the scene's CRS, transform and nodata (data: the `data` parameters, whose
    `folder.rgb_bands` decide the image's nodata as in data_preparation).

    Streamed: the model runs while the dataset writes each scene, one batch of `inference_batch_size` test
    tiles at a time, and each tile's valid window is written once (test tiles never overlap), so memory
    depends on the tile batch, not on the scene. compute: the `compute` parameters (None = local); with
    `backend: dask` the ResUNet's tile batches run on the cluster's workers, `compute.tiles_per_task` tiles
    per task and a scene's tasks in flight at once (the clip_decoder predicts on the driver, as the log says).
    """
    n_outputs, batch_size = len(classes) + 1, int(segmentation_training["inference_batch_size"])
    on_cluster = uses_dask(compute) and segmentation_model_kind(segmentation_training) != CLIP_DECODER
    if uses_dask(compute) and not on_cluster:
        logger.warning("compute.backend is dask, but segmentation_training.model %s predicts on the driver "
                       "(its frozen CLIP); only the ResUNet runs on the cluster", segmentation_model_kind(segmentation_training))
    # tiles per model call: an inference batch here, a task (whole batches) on the cluster
    set_size = int(compute["tiles_per_task"]) if on_cluster else batch_size
    names = probability_band_names(classes)
    test_tiles = tiles_of_split(tile_index, TEST_SPLIT)
    test_scenes = sorted(tile_rows(scenes[scenes["split"] == TEST_SPLIT]), key=lambda scene: scene["scene_id"])
    sets_by_scene = {}
    for scene in test_scenes:
        scene_tiles = tile_rows(test_tiles[test_tiles["scene_id"] == scene["scene_id"]])
        sets_by_scene[scene["scene_id"]] = [scene_tiles[a:b] for a, b in task_spans(len(scene_tiles), batch_size, set_size)]
    if on_cluster:
        results_of = _ClusterSceneStream(
            partial(_cluster_probability_sets, segmentation_model, segmentation_training, n_outputs, device, compute),
            tiles, sets_by_scene,
        ).results_of
    else:
        local = tile_probabilities(segmentation_model, segmentation_training, n_outputs, resolve_device(device),
                                   text_prototype_kb)
        results_of = partial(_local_scene_results, local, tiles, sets_by_scene)
    progress = _SceneProgress(len(test_scenes))
    return {
        scene["scene_id"]: StreamedSceneRaster(
            int(scene["height"]), int(scene["width"]), len(names),
            partial(_probability_blocks, sets_by_scene[scene["scene_id"]], partial(results_of, scene["scene_id"]),
                    progress),
            Georeference.from_scene(scene.get("crs"), scene.get("transform")), scene_validity(scene, data), names,
        )
        for scene in test_scenes
    }


def _tile_stacks(tiles: Partitions, tile_sets: list[list[dict]]) -> Iterator[np.ndarray]:
    """(N, H, W, 3) of each set of tiles, read when asked for."""
    return (stack_tiles(tiles, [t["tile_id"] for t in tile_set]) for tile_set in tile_sets)


def _local_scene_results(
    probabilities: Callable[[np.ndarray], np.ndarray], tiles: Partitions, sets_by_scene: dict[str, list[list[dict]]],
    scene_id: str,
) -> Iterator[np.ndarray]:
    return map(probabilities, _tile_stacks(tiles, sets_by_scene[scene_id]))


class _ClusterSceneStream:
    """Every test scene's tile sets through one stream of cluster tasks, so that the next scenes' tasks
    run while a scene is written (a scene of a few tiles is one task: scene by scene, one worker would
    idle). The dataset writes the scenes in sorted id order (PartitionedDataset sorts its partitions),
    the order of the stream; a scene asked for out of that order is an error, never a wrong raster."""

    def __init__(self, predict_sets: Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]], tiles: Partitions,
                 sets_by_scene: dict[str, list[list[dict]]]) -> None:
        self._predict_sets, self._tiles, self._sets_by_scene = predict_sets, tiles, sets_by_scene
        self._order, self._left, self._results = iter(list(sets_by_scene)), len(sets_by_scene), None

    def results_of(self, scene_id: str) -> Iterator[np.ndarray]:
        expected = next(self._order, None)
        if expected != scene_id:
            raise RuntimeError(f"predict_scenes: scene {scene_id} was asked for when {expected} was next: on a Dask "
                               "cluster the test scenes' rasters must be written in sorted scene-id order")
        if self._results is None:  # the first scene written starts the stream (the node has returned by then)
            every_set = [tile_set for sets in self._sets_by_scene.values() for tile_set in sets]
            self._results = self._predict_sets(_tile_stacks(self._tiles, every_set))
        self._left -= 1
        return self._take(len(self._sets_by_scene[scene_id]), last=self._left == 0)

    def _take(self, n_sets: int, last: bool) -> Iterator[np.ndarray]:
        for _ in range(n_sets):
            yield next(self._results)
        if last:
            self._results.close()  # leaves the mapper's context: the workers drop the scattered weights


def _probability_blocks(
    tile_sets: list[list[dict]], results: Callable[[], Iterator[np.ndarray]], progress: _SceneProgress,
) -> Iterator[tuple[TileWindow, np.ndarray]]:
    """(valid window, stored probability bands) of each test tile of one scene, one set of tiles (an
    inference batch, or a cluster task) at a time; `results()` gives each set's probabilities in order."""
    for tile_set, probs in zip(tile_sets, results(), strict=True):
        for tile, tile_probs in zip(tile_set, probs, strict=True):
            window = tile_window(tile)
            yield window, quantise_probabilities(tile_probs[:, : window.height, : window.width])
    progress.scene_done(sum(len(tile_set) for tile_set in tile_sets))


def _cluster_probability_sets(
    segmentation_model: dict, segmentation_training: dict, n_outputs: int, device: str, compute: dict,
    stacks: Iterable[np.ndarray],
) -> Iterator[np.ndarray]:
    """The ResUNet's probabilities of each tile stack on the Dask cluster, in order (each worker builds it
    once for `device`): the mapper (and the weights it sent to the workers) lives until the last stack's
    result is taken."""
    model = WorkerModel(
        model_fingerprint("resunet", segmentation_model, {**segmentation_training, "n_outputs": n_outputs,
                                                          "device": device}),
        partial(_worker_resunet, segmentation_training, n_outputs, device), segmentation_model,
    )
    with tile_mapper(compute) as mapper:
        cluster = ClusterProbabilities(mapper, model, segmentation_training, int(compute["tiles_per_task"]))
        yield from cluster.map(stacks)


def _class_blocks(probabilities: SceneRaster, n_classes: int) -> Iterator[tuple[TileWindow, np.ndarray]]:
    for window, bands in probabilities.blocks():
        yield window, encode_prediction(classes_from_probabilities(bands, n_classes), n_classes)[None]


def classify_scenes(prediction_probabilities: Partitions, classes: list[str]) -> dict[str, StreamedSceneRaster]:
    """Each scene's prediction (0/255 for a binary task, class indices otherwise) from its stored
    probabilities, block by block, with their georeferencing and nodata: the stored probabilities'
    decision (prediction_rasters.py), which is exactly the model's argmax."""
    predictions = {}
    for scene_id in sorted(prediction_probabilities):
        probabilities = load_partition(prediction_probabilities, scene_id, "prediction_probabilities")
        predictions[scene_id] = StreamedSceneRaster(
            probabilities.height, probabilities.width, 1, partial(_class_blocks, probabilities, len(classes)),
            probabilities.georeference, probabilities.valid,
        )
    return predictions


def scene_heatmaps(cams: Partitions, scene_tiles: pd.DataFrame, classes: list[str], height: int, width: int) -> np.ndarray:
    """(C, height, width) uint8: each class's heatmap of a test scene, stitched from its test tiles."""
    return np.stack([
        stitch_scene(cams, scene_tiles, height, width, "cams", key_of=partial(cam_key, name)) for name in classes
    ])


def refine_predictions(
    predictions: Partitions, cams: Partitions, tile_index: pd.DataFrame, scenes: pd.DataFrame,
    prompt_generation_resolved: dict, segmentation_training: dict, sam_labeling: dict, classes: list[str],
) -> tuple[Partitions, dict[str, dict[str, float]]]:
    """The test-scene predictions, refined by `segmentation_training.refine`, and the counts for MLflow.

    `none` returns the predictions as they are, still streamed (and logs nothing); `ios` sets every
    predicted component whose IOS with the stitched heatmap > T is below `sam_labeling.ios.min_overlap`
    to background (segmenters/prediction_refinement.py). Connected components span the whole scene, so
    `ios` (opt-in) holds each scene, its prediction and heatmaps in memory: the windowed path is `none`.
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
        stored = as_scene_raster(load_partition(predictions, scene.scene_id, "predictions"))
        predicted = decode_prediction(scene_array(stored), len(classes))
        class_index, scene_counts = refine_by_ios(predicted, heatmaps, threshold, min_overlap)
        whole = TileWindow(0, 0, stored.height, stored.width)
        refined[scene.scene_id] = ArraySceneRaster(
            encode_prediction(class_index, len(classes)), stored.georeference, stored.valid(whole)
        )
        counts = counts + scene_counts
    logger.info(
        "Refined %d test scenes with IOS >= %s against CAM > %d: kept %d components, set %d to background "
        "(%d pixels)", len(refined), min_overlap, threshold, counts.kept, counts.removed, counts.pixels_removed,
    )
    values = {COMPONENTS_KEPT: counts.kept, COMPONENTS_REMOVED: counts.removed, PIXELS_REMOVED: counts.pixels_removed}
    return refined, {f"{REFINEMENT_PREFIX}.{name}": {"value": float(v), "step": 0} for name, v in values.items()}
