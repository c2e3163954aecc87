"""Nodes of evaluation: the metrics of each stage, pooled and, when it measures several sources,
per source (with one source the per-source metrics would repeat the pooled ones, so `per_source`
is empty).

Stages (APSAM Table I, the classic WSSS baseline and a fully supervised reference), each with a
`scope` saying which scenes it measures:
- cam_threshold (train_scenes): CAM > T as the mask (a negative tile predicts nothing);
- pseudo_labels (train_scenes): the segmenter's pseudo-masks; pixels the pseudo-mask marks 255
  (ignore) count as background, since nothing was claimed there;
- prediction (test_scenes): the ResUNet trained on the pseudo-masks, test scenes at their
  original size, read window by window (each test tile's window; test tiles never overlap);
- supervised_reference (test_scenes): the same ResUNet, schedule and seed trained on the true
  masks, measured by the same code as prediction;
plus weak_to_full_ratio = prediction IoU / supervised_reference IoU, pooled and per source (the
sources both test-scene stages report).

The landslide inventory (build_landslide_inventory) polygonises the test scenes' predictions into
a GeoPackage (geospatial/inventory.py), with its totals logged to MLflow.

Train tiles overlap, so the train-scene stages count each scene pixel once: every pixel belongs
to one owning tile (nearest valid-window centre, see `imagery.tiling.owned_masks`) and each tile is
measured on its owned pixels only. Pixels outside the scene (tile padding) are never measured.
Ground truth comes from `tile_masks`; its 255 pixels (padding, nodata, ignore) are left out.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from wsss_project.contracts import (
    BACKGROUND_NAME,
    CAM_THRESHOLD,
    IGNORE_INDEX,
    INVENTORY_PREFIX,
    MLFLOW_METRICS,
    N_POLYGONS,
    PREDICTION,
    PSEUDO_LABELS,
    RATIO_KEY,
    RATIO_METRIC,
    STAGE_SCOPES,
    STAGES,
    SUMMARY_METRICS,
    SUPERVISED_REFERENCE,
    TEST_SPLIT,
    TRAIN_SPLIT,
    cam_key,
)
from wsss_project.datasets.scene_raster import (
    ArraySceneRaster,
    SceneRaster,
    StreamedSceneRaster,
    as_scene_raster,
    scene_array,
)
from wsss_project.errors import UserInputError
from wsss_project.evaluation.metrics import ConfusionAccumulator
from wsss_project.geospatial.inventory import (
    AREA_COLUMNS,
    BlockReader,
    inventory_layers,
    scene_components,
    scene_georeference,
    scene_inventory,
)
from wsss_project.imagery.tiling import TileWindow, mark_outside_scene, owned_masks
from wsss_project.prediction_rasters import class_probability_bands, probability_band_names
from wsss_project.reporting.figures import sample_panels, stage_comparison
from wsss_project.tile_data import (
    Partitions,
    load_partition,
    stitch_scene,
    tile_rows,
    tiles_of_split,
)
from wsss_project.validation.schema import check_section

logger = logging.getLogger(__name__)


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


def per_source_metrics(by_source: dict[str, ConfusionAccumulator], names: list[str]) -> dict[str, dict]:
    """The metrics of each source, or {} when the stage measured one source (they are the pooled ones)."""
    if len(by_source) < 2:
        return {}
    return {source: acc.metrics(names) for source, acc in sorted(by_source.items())}


def _summarise(
    pooled: ConfusionAccumulator, by_source: dict[str, ConfusionAccumulator], names: list[str], stage: str
) -> dict:
    return {"scope": STAGE_SCOPES[stage], **pooled.metrics(names), "per_source": per_source_metrics(by_source, names)}


def _class_names(classes: list[str]) -> list[str]:
    return [BACKGROUND_NAME, *classes]


def _accumulators(classes: list[str]) -> tuple[ConfusionAccumulator, dict[str, ConfusionAccumulator]]:
    n = len(classes) + 1
    return ConfusionAccumulator(n, IGNORE_INDEX), defaultdict(lambda: ConfusionAccumulator(n, IGNORE_INDEX))


def tile_window(tile: dict[str, Any]) -> TileWindow:
    """The valid window of a tile_index row in its scene."""
    return TileWindow(int(tile["row"]), int(tile["col"]), int(tile["height"]), int(tile["width"]))


def owned_train_tiles(tile_index: pd.DataFrame) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """(tile row, owned pixels) of every train tile, scene by scene: each scene pixel is owned once.

    The owned mask is bool over the tile's valid (height, width); ties between tiles go to the
    smaller (row, col). The scene size is the extent of its tiles, which cover it.
    """
    train = tiles_of_split(tile_index, TRAIN_SPLIT)
    for _, scene_tiles in train.groupby("scene_id", sort=True):
        rows = tile_rows(scene_tiles.sort_values(["row", "col"]))
        windows = [tile_window(tile) for tile in rows]
        height = max(w.row + w.height for w in windows)
        width = max(w.col + w.width for w in windows)
        yield from zip(rows, owned_masks(windows, height, width), strict=True)


def _update_owned(
    accumulators: list[ConfusionAccumulator], pred: np.ndarray, target: np.ndarray, window: TileWindow,
    owned: np.ndarray,
) -> None:
    """Add the owned pixels of one tile (inside its valid window) to every accumulator."""
    pred = pred[: window.height, : window.width][owned]
    target = target[: window.height, : window.width][owned]
    for accumulator in accumulators:
        accumulator.update(pred, target)


def evaluate_cam_threshold(
    cams: Partitions, tile_masks: Partitions, tile_index: pd.DataFrame, prompt_generation: dict, classes: list[str]
) -> dict[str, Any]:
    """Metrics of CAM > T over the train scenes, each scene pixel counted once."""
    threshold = int(prompt_generation["threshold"])
    pooled, by_source = _accumulators(classes)
    for tile, owned in owned_train_tiles(tile_index):
        labels = np.array([int(tile[name]) for name in classes])
        heatmaps = np.stack([load_partition(cams, cam_key(name, tile["tile_id"]), "cams") for name in classes])
        window = tile_window(tile)
        pred = mark_outside_scene(cam_threshold_mask(heatmaps, labels, threshold), window, IGNORE_INDEX)
        target = load_partition(tile_masks, tile["tile_id"], "tile_masks")
        _update_owned([pooled, by_source[tile["source"]]], pred, target, window, owned)
    result = _summarise(pooled, by_source, _class_names(classes), CAM_THRESHOLD)
    logger.info("cam_threshold (T=%d, train scenes): F1 %.3f IoU %.3f", threshold, result["f1"], result["iou"])
    return result


def evaluate_pseudo_labels(
    pseudo_masks: Partitions, tile_masks: Partitions, tile_index: pd.DataFrame, classes: list[str]
) -> dict[str, Any]:
    """Metrics of the pseudo-masks over the train scenes, each scene pixel counted once.

    Inside the scene, a pseudo-mask's 255 (ignore) counts as background.
    """
    pooled, by_source = _accumulators(classes)
    for tile, owned in owned_train_tiles(tile_index):
        pred = load_partition(pseudo_masks, tile["tile_id"], "pseudo_masks").copy()
        pred[pred == IGNORE_INDEX] = 0
        target = load_partition(tile_masks, tile["tile_id"], "tile_masks")
        _update_owned([pooled, by_source[tile["source"]]], pred, target, tile_window(tile), owned)
    result = _summarise(pooled, by_source, _class_names(classes), PSEUDO_LABELS)
    logger.info("pseudo_labels (train scenes): F1 %.3f IoU %.3f", result["f1"], result["iou"])
    return result


def scene_ground_truth(tile_masks: Partitions, scene_tiles: pd.DataFrame, height: int, width: int) -> np.ndarray:
    """A test scene's mask at its original size, stitched from its non-overlapping tile masks (whole scene
    in memory: for benchmarks and figures; the test-scene stages read window by window)."""
    return stitch_scene(tile_masks, scene_tiles, height, width, "tile_masks")


def _window_readable(stored: Any, dataset: str, scene: dict[str, Any]) -> SceneRaster:
    """A test scene's stored raster, readable by window (a streamed one is gathered in memory), checked
    against the scene's size."""
    raster = as_scene_raster(stored)
    if raster.shape != (int(scene["height"]), int(scene["width"])):
        raise UserInputError(
            f"`{dataset}` of {scene['scene_id']} is {raster.shape}, its scene is "
            f"{(int(scene['height']), int(scene['width']))}: rerun the pipeline that writes it"
        )
    return ArraySceneRaster(scene_array(raster)) if isinstance(raster, StreamedSceneRaster) else raster


def _check_covers_once(windows: list[TileWindow], scene: dict[str, Any]) -> None:
    """Test tiles never overlap (data_preparation), so they cover their scene once when they lie inside it
    and their areas add up to it."""
    height, width = int(scene["height"]), int(scene["width"])
    inside = all(w.row >= 0 and w.col >= 0 and w.row + w.height <= height and w.col + w.width <= width for w in windows)
    if not inside or sum(w.height * w.width for w in windows) != height * width:
        raise UserInputError(
            f"the test tiles of {scene['scene_id']} do not cover its {height}x{width} pixels once: rerun data_preparation"
        )


def _evaluate_test_scenes(
    predictions: Partitions, tile_masks: Partitions, tile_index: pd.DataFrame, scenes: pd.DataFrame,
    classes: list[str], stage: str, dataset: str,
) -> dict[str, Any]:
    """Metrics of the scene predictions of every test scene, at original size, window by window: each
    test tile's window of the prediction against the tile's mask (each scene pixel once; padding is 255)."""
    pooled, by_source = _accumulators(classes)
    test_tiles = tiles_of_split(tile_index, TEST_SPLIT)
    for scene in tile_rows(scenes[scenes["split"] == TEST_SPLIT]):
        stored = _window_readable(load_partition(predictions, scene["scene_id"], dataset), dataset, scene)
        scene_tiles = tile_rows(test_tiles[test_tiles["scene_id"] == scene["scene_id"]])
        _check_covers_once([tile_window(tile) for tile in scene_tiles], scene)
        for tile in scene_tiles:
            window = tile_window(tile)
            pred = decode_prediction(stored.read(window), len(classes))
            target = load_partition(tile_masks, tile["tile_id"], "tile_masks")[: window.height, : window.width]
            for accumulator in (pooled, by_source[scene["source"]]):
                accumulator.update(pred, target)
    result = _summarise(pooled, by_source, _class_names(classes), stage)
    logger.info("%s (test scenes): F1 %.3f IoU %.3f", stage, result["f1"], result["iou"])
    return result


def evaluate_predictions(
    predictions: Partitions, tile_masks: Partitions, tile_index: pd.DataFrame, scenes: pd.DataFrame, classes: list[str]
) -> dict[str, Any]:
    """Metrics of the weakly supervised ResUNet's predictions of the test scenes."""
    return _evaluate_test_scenes(predictions, tile_masks, tile_index, scenes, classes, PREDICTION, "predictions")


def evaluate_supervised_reference(
    supervised_predictions: Partitions, tile_masks: Partitions, tile_index: pd.DataFrame, scenes: pd.DataFrame,
    classes: list[str],
) -> dict[str, Any]:
    """Metrics of the fully supervised reference's predictions of the test scenes (same code as prediction)."""
    return _evaluate_test_scenes(
        supervised_predictions, tile_masks, tile_index, scenes, classes, SUPERVISED_REFERENCE, "supervised_predictions"
    )


def _ratio_or_none(weak: float, full: float, scope: str) -> float | None:
    """weak / full, or None (JSON null) with a log line when the reference scores 0."""
    if full == 0:
        logger.warning(
            "%s (%s) is undefined: the supervised reference's IoU is 0, reported as null", RATIO_KEY, scope
        )
        return None
    return float(weak / full)


def weak_to_full_ratio(prediction: dict, supervised_reference: dict) -> dict[str, Any]:
    """prediction IoU / supervised_reference IoU on the test scenes, pooled and per source (the
    sources both stages report: none when the test scenes come from one source).

    A ratio whose reference IoU is 0 is None (null in JSON, not logged to MLflow), never NaN.
    """
    sources = sorted(set(prediction.get("per_source", {})) & set(supervised_reference.get("per_source", {})))
    return {
        "definition": f"prediction.{RATIO_METRIC} / supervised_reference.{RATIO_METRIC}",
        "value": _ratio_or_none(prediction[RATIO_METRIC], supervised_reference[RATIO_METRIC], "pooled"),
        "per_source": {
            source: _ratio_or_none(
                prediction["per_source"][source][RATIO_METRIC],
                supervised_reference["per_source"][source][RATIO_METRIC],
                source,
            )
            for source in sources
        },
    }


def flatten_for_mlflow(report: dict[str, dict]) -> dict[str, dict[str, float]]:
    """`<stage>.<metric>` and `<stage>.<source>.<metric>` entries for kedro-mlflow, plus
    `weak_to_full_ratio` and `weak_to_full_ratio.<source>` where defined."""
    flat = {}
    for stage, result in report.items():
        if stage == RATIO_KEY:
            continue
        for key in MLFLOW_METRICS:
            flat[f"{stage}.{key}"] = {"value": float(result[key]), "step": 0}
        for source, sub in result.get("per_source", {}).items():
            for key in MLFLOW_METRICS:
                flat[f"{stage}.{source}.{key}"] = {"value": float(sub[key]), "step": 0}
    ratio = report.get(RATIO_KEY)
    if ratio is not None:
        if ratio["value"] is not None:
            flat[RATIO_KEY] = {"value": ratio["value"], "step": 0}
        for source, value in ratio["per_source"].items():
            if value is not None:
                flat[f"{RATIO_KEY}.{source}"] = {"value": value, "step": 0}
    return flat


def collect_metrics(
    cam_threshold: dict, pseudo_labels: dict, prediction: dict, supervised_reference: dict
) -> tuple[dict[str, dict], dict[str, dict[str, float]]]:
    """The `metrics` report {stage: metrics, weak_to_full_ratio: ...} and its flat MLflow form."""
    report = {
        CAM_THRESHOLD: cam_threshold,
        PSEUDO_LABELS: pseudo_labels,
        PREDICTION: prediction,
        SUPERVISED_REFERENCE: supervised_reference,
    }
    for stage in STAGES:
        logger.info("%-20s %-12s OA %.4f  P %.4f  R %.4f  F1 %.4f  IoU %.4f", stage, STAGE_SCOPES[stage],
                    *(report[stage][k] for k in SUMMARY_METRICS))
    report[RATIO_KEY] = weak_to_full_ratio(prediction, supervised_reference)
    ratio = report[RATIO_KEY]["value"]
    logger.info("%s (%s): %s", RATIO_KEY, report[RATIO_KEY]["definition"], "null" if ratio is None else f"{ratio:.4f}")
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
    positive = tiles_of_split(tile_index, TRAIN_SPLIT)
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


# --------------------------------------------------------------------------- landslide inventory


def _block_reader(stored: Any, dataset: str, scene: dict[str, Any]) -> BlockReader:
    """Window reads (rasterio windows, as the inventory asks) of a test scene's stored raster: the one
    place that maps the inventory's windows onto the scene-raster readers."""
    raster = _window_readable(stored, dataset, scene)
    return lambda window: raster.read(TileWindow(window.row_off, window.col_off, window.height, window.width))


def _class_reader(stored: Any, scene: dict[str, Any], n_classes: int) -> BlockReader:
    read = _block_reader(stored, "predictions", scene)
    return lambda window: decode_prediction(read(window), n_classes)


def _probability_reader(stored: Any, scene: dict[str, Any], classes: list[str]) -> BlockReader:
    """(n_classes, h, w) windows of each class's stored probability (prediction_rasters owns the bands)."""
    raster, n_classes = as_scene_raster(stored), len(classes)
    expected = len(probability_band_names(classes))
    if raster.count != expected:
        raise UserInputError(
            f"`prediction_probabilities` of {scene['scene_id']} has {raster.count} band(s), expected {expected} "
            f"for {n_classes} class(es): rerun the pipeline that writes it"
        )
    read = _block_reader(raster, "prediction_probabilities", scene)
    return lambda window: class_probability_bands(read(window), n_classes)


def _inventory_totals(layers: dict[str, gpd.GeoDataFrame]) -> dict[str, dict[str, float]]:
    totals = {N_POLYGONS: float(sum(len(frame) for frame in layers.values()))}
    for layer, column in AREA_COLUMNS.items():
        totals[column] = float(layers[layer][column].sum())
    return {f"{INVENTORY_PREFIX}.{name}": {"value": value, "step": 0} for name, value in totals.items()}


def build_landslide_inventory(
    predictions: Partitions, prediction_probabilities: Partitions, scenes: pd.DataFrame, inventory: dict,
    classes: list[str],
) -> tuple[dict[str, gpd.GeoDataFrame], dict[str, dict[str, float]]]:
    """The GeoPackage layers of the test scenes' predicted polygons (geospatial/inventory.py) and
    their totals for MLflow (polygons, area in m² and in pixels).

    `prediction_probabilities` may hold no partition (a run that writes none): mean_probability is
    then NaN, as the log says. Each scene is read window by window (`inventory.window_size`).
    """
    check_section(inventory, "inventory")
    n_classes = len(classes)
    if not prediction_probabilities:
        logger.warning("inventory: no `prediction_probabilities` in this run, so every mean_probability is NaN")
    test = scenes[scenes["split"] == TEST_SPLIT]
    frames, start = [], time.perf_counter()
    for n, scene in enumerate(test.itertuples(index=False), start=1):
        georef = scene_georeference(scene.scene_id, scene.crs, scene.transform, scene.height, scene.width)
        read_probabilities = None
        if prediction_probabilities:
            stored = load_partition(prediction_probabilities, scene.scene_id, "prediction_probabilities")
            read_probabilities = _probability_reader(stored, scene._asdict(), classes)
        stored = load_partition(predictions, scene.scene_id, "predictions")
        read_classes = _class_reader(stored, scene._asdict(), n_classes)
        components = scene_components(scene.scene_id, read_classes, read_probabilities, georef.height, georef.width,
                                      n_classes, int(inventory["window_size"]))
        frames.append(scene_inventory(scene.scene_id, components, georef, classes, inventory["min_area"]))
        elapsed = time.perf_counter() - start
        logger.info("inventory: scene %d/%d (%s) %d polygons in %s; %.2f scenes/s", n, len(test), scene.scene_id,
                    len(frames[-1][1]), frames[-1][0], n / max(elapsed, 1e-9))
    layers = inventory_layers(frames)
    totals = _inventory_totals(layers)
    logger.info("inventory: %d polygons, %.1f m² (scenes with a CRS), %.0f pixels (scenes without)",
                *(totals[f"{INVENTORY_PREFIX}.{k}"]["value"] for k in (N_POLYGONS, *AREA_COLUMNS.values())))
    return layers, totals
