import json
from functools import partial

import numpy as np
import pandas as pd
import pytest
from toy_tiles import PROMPT_GENERATION, toy_tiles

from wsss_project.datasets import SceneRasterDataset
from wsss_project.datasets.scene_raster import ArraySceneRaster, Georeference, write_scene_raster
from wsss_project.errors import UserInputError
from wsss_project.evaluation.metrics import ConfusionAccumulator, binary_mask_metrics
from wsss_project.imagery.tiling import TileWindow, iter_tiles, owned_masks
from wsss_project.pipelines.evaluation import create_pipeline as evaluation_pipeline
from wsss_project.pipelines.evaluation.nodes import (
    cam_threshold_mask,
    collect_metrics,
    decode_prediction,
    evaluate_cam_threshold,
    evaluate_predictions,
    evaluate_pseudo_labels,
    evaluate_supervised_reference,
    flatten_for_mlflow,
    scene_ground_truth,
    weak_to_full_ratio,
)


def test_cam_threshold_is_strict_and_never_predicts_a_negative_class():
    cams = np.array([[[120, 121]], [[200, 200]]], np.uint8)  # 2 classes, 1x2 pixels
    assert cam_threshold_mask(cams, np.array([1, 0]), 120).tolist() == [[0, 1]]
    assert cam_threshold_mask(cams, np.array([1, 1]), 120).tolist() == [[2, 2]]


def test_perfect_pseudo_labels_score_one_and_ignore_counts_as_background():
    _, masks, cams, index = toy_tiles()
    perfect = evaluate_pseudo_labels(masks, masks, index, ["landslide"])
    assert perfect["iou"] == 1.0 and perfect["per_source"] == {}  # one source: the pooled figures are its own
    ignored = {k: np.where(v == 1, 255, v).astype(np.uint8) for k, v in masks.items()}
    assert evaluate_pseudo_labels(ignored, masks, index, ["landslide"])["recall"] == 0.0


def test_per_source_metrics_only_when_a_stage_measures_several_sources():
    _, masks, _, index = toy_tiles()
    pseudo = {k: np.zeros_like(v) for k, v in masks.items()}  # misses every landslide: fn only
    one = evaluate_pseudo_labels(pseudo, masks, index, ["landslide"])
    assert one["per_source"] == {} and not any(".toy." in key for key in flatten_for_mlflow({"pseudo_labels": one}))

    two_sources = index.assign(source=["a", "a", "b", "b"])  # tiles 1 and 3 hold the landslides
    two = evaluate_pseudo_labels(pseudo, masks, two_sources, ["landslide"])
    assert set(two["per_source"]) == {"a", "b"}
    assert two["per_source"]["a"]["fn"] + two["per_source"]["b"]["fn"] == two["fn"] == one["fn"] > 0
    flat = flatten_for_mlflow({"pseudo_labels": two})
    assert flat["pseudo_labels.a.recall"]["value"] == flat["pseudo_labels.b.recall"]["value"] == 0.0


def test_cam_threshold_stage_counts_negative_tiles_as_empty():
    _, masks, cams, index = toy_tiles()
    hot = {k: np.full_like(v, 255) for k, v in cams.items()}  # CAM fires everywhere
    result = evaluate_cam_threshold(hot, masks, index, PROMPT_GENERATION, ["landslide"])
    positive_pixels = sum(int(m.size) for t, m in masks.items() if index.set_index("tile_id").loc[t, "landslide"])
    assert result["tp"] + result["fp"] == positive_pixels


def test_binary_predictions_decode_from_0_255():
    assert decode_prediction(np.array([[0, 255]], np.uint8), 1).tolist() == [[0, 1]]


def test_mlflow_names_have_stage_and_source():
    flat = flatten_for_mlflow({"prediction": {"oa": 1, "precision": 1, "recall": 1, "f1": 1, "iou": 0.5, "miou": 0.7,
                                              "per_source": {"bijie": {"oa": 1, "precision": 1, "recall": 1, "f1": 1,
                                                                       "iou": 0.25, "miou": 0.6}}}})
    assert flat["prediction.iou"] == {"value": 0.5, "step": 0}
    assert flat["prediction.bijie.iou"]["value"] == 0.25


# --- train-scene stages: each scene pixel counted once, padding never ------------------------------

TILE = 64


def _overlapping_scene(height=100, width=150, overlap=0.4, seed=0):
    """A train scene cut into overlapping tiles like data_preparation does, with a random
    'pseudo-mask' per tile that disagrees with its neighbours where the tiles overlap."""
    rng = np.random.default_rng(seed)
    truth = (rng.random((height, width)) < 0.3).astype(np.uint8)
    rows, masks, pseudo, cams = [], {}, {}, {}
    for window, mask in iter_tiles(truth, TILE, overlap, pad_value=255):
        tile_id = f"s__{window.row}_{window.col}"
        masks[tile_id] = mask
        pseudo[tile_id] = rng.integers(0, 2, (TILE, TILE), dtype=np.uint8)
        cams[f"landslide/{tile_id}"] = rng.integers(0, 256, (TILE, TILE), dtype=np.uint8)
        rows.append({"tile_id": tile_id, "scene_id": "s", "source": "toy", "row": window.row, "col": window.col,
                     "height": window.height, "width": window.width, "split": "train", "landslide": 1})
    return truth, masks, pseudo, cams, pd.DataFrame(rows)


def _stitched_by_owner(pieces: dict, index: pd.DataFrame, height: int, width: int) -> np.ndarray:
    """The scene as the owning tiles see it (an independent stitch via the owned masks)."""
    windows = [TileWindow(t.row, t.col, t.height, t.width) for t in index.sort_values(["row", "col"]).itertuples()]
    scene = np.full((height, width), 7, np.uint8)
    for w, owned, tile_id in zip(windows, owned_masks(windows, height, width),
                                 index.sort_values(["row", "col"])["tile_id"], strict=True):
        part = scene[w.row : w.row + w.height, w.col : w.col + w.width]
        part[owned] = pieces[tile_id][: w.height, : w.width][owned]
    return scene


def test_pseudo_labels_on_overlapping_tiles_count_each_scene_pixel_once():
    truth, masks, pseudo, _, index = _overlapping_scene()
    assert index["row"].nunique() > 1 and index["col"].nunique() > 2  # tiles really overlap
    result = evaluate_pseudo_labels(pseudo, masks, index, ["landslide"])
    assert result["pixels"] == truth.size  # the old pooling counted every tile pixel: ~2.5x
    scene_pred = _stitched_by_owner(pseudo, index, *truth.shape)
    expected = binary_mask_metrics(scene_pred, truth)
    assert (result["tp"], result["fp"], result["fn"]) == (expected["tp"], expected["fp"], expected["fn"])
    assert result["scope"] == "train_scenes"


def test_cam_threshold_on_overlapping_tiles_counts_each_scene_pixel_once():
    truth, masks, _, cams, index = _overlapping_scene(seed=1)
    result = evaluate_cam_threshold(cams, masks, index, PROMPT_GENERATION, ["landslide"])
    assert result["pixels"] == truth.size
    heat = {k.split("/", 1)[1]: (v > PROMPT_GENERATION["threshold"]).astype(np.uint8) for k, v in cams.items()}
    expected = binary_mask_metrics(_stitched_by_owner(heat, index, *truth.shape), truth)
    assert (result["tp"], result["fp"], result["fn"]) == (expected["tp"], expected["fp"], expected["fn"])
    assert result["scope"] == "train_scenes"


def test_padding_is_never_measured_even_when_the_mask_does_not_mark_it():
    _, masks, cams, index = toy_tiles()
    index["height"], index["width"] = 40, 50  # border tiles: the rest is reflected padding
    hot = {k: np.full_like(v, 255) for k, v in cams.items()}
    everything = {k: np.ones_like(v) for k, v in masks.items()}  # a pseudo-mask claiming the padding
    for result in (evaluate_cam_threshold(hot, masks, index, PROMPT_GENERATION, ["landslide"]),
                   evaluate_pseudo_labels(everything, masks, index, ["landslide"])):
        assert result["pixels"] == len(index) * 40 * 50
    inside = sum(int(m[:40, :50].sum()) for m in masks.values())
    assert evaluate_pseudo_labels(everything, masks, index, ["landslide"])["tp"] == inside


def test_ignore_inside_the_scene_still_counts_as_background_on_owned_pixels():
    truth, masks, pseudo, _, index = _overlapping_scene(seed=2)
    ignored = {k: np.where(v == 1, 255, v).astype(np.uint8) for k, v in pseudo.items()}
    result = evaluate_pseudo_labels(ignored, masks, index, ["landslide"])
    assert result["tp"] == result["fp"] == 0 and result["fn"] == int(truth.sum())


# --- test-scene stages and the weak-to-full ratio ---------------------------------------------------

def _test_scene():
    truth = np.zeros((64, 100), np.uint8)
    truth[10:40, 20:80] = 1
    index = pd.DataFrame([
        {"tile_id": f"t__0_{c}", "scene_id": "t", "source": "toy", "row": 0, "col": c, "height": 64,
         "width": min(64, 100 - c), "split": "test", "landslide": 1}
        for c in (0, 64)
    ])
    masks = {f"t__0_{c}": np.pad(truth[:, c : c + 64], ((0, 0), (0, 64 - truth[:, c : c + 64].shape[1])),
                                 constant_values=255) for c in (0, 64)}
    scenes = pd.DataFrame({"scene_id": ["t"], "source": ["toy"], "height": [64], "width": [100], "split": ["test"]})
    return truth, masks, index, scenes


def test_supervised_reference_is_measured_like_the_prediction():
    truth, masks, index, scenes = _test_scene()
    half = np.where(truth == 1, 255, 0).astype(np.uint8)
    half[:, :50] = 0
    weak = evaluate_predictions({"t": half}, masks, index, scenes, ["landslide"])
    full = evaluate_supervised_reference({"t": half}, masks, index, scenes, ["landslide"])
    assert {k: v for k, v in weak.items() if k != "scope"} == {k: v for k, v in full.items() if k != "scope"}
    assert (weak["scope"], full["scope"]) == ("test_scenes", "test_scenes")
    assert weak["pixels"] == truth.size and 0 < weak["iou"] < 1


def _stage(iou, per_source):
    metrics = {"oa": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0, "iou": iou, "miou": 1.0}
    return {**metrics, "per_source": {s: {**metrics, "iou": v} for s, v in per_source.items()}}


def test_weak_to_full_ratio_divides_the_ious_pooled_and_per_source():
    ratio = weak_to_full_ratio(_stage(0.3, {"a": 0.2, "b": 0.5}), _stage(0.6, {"a": 0.8, "b": 0.5}))
    assert ratio["value"] == pytest.approx(0.5)
    assert ratio["per_source"] == {"a": pytest.approx(0.25), "b": pytest.approx(1.0)}


def test_weak_to_full_ratio_is_null_not_nan_when_the_reference_scores_zero(caplog):
    with caplog.at_level("WARNING"):
        ratio = weak_to_full_ratio(_stage(0.3, {"a": 0.0, "b": 0.5}), _stage(0.0, {"a": 0.0, "b": 0.25}))
    assert ratio["value"] is None and ratio["per_source"] == {"a": None, "b": pytest.approx(2.0)}
    assert "supervised reference" in caplog.text
    json.dumps(ratio, allow_nan=False)  # valid JSON: null, never NaN
    flat = flatten_for_mlflow({"prediction": _stage(0.3, {}), "weak_to_full_ratio": ratio})
    assert "weak_to_full_ratio" not in flat and flat["weak_to_full_ratio.b"]["value"] == pytest.approx(2.0)


def test_collect_metrics_reports_four_stages_with_scopes_and_the_ratio():
    stages = {name: {**_stage(iou, {"toy": iou}), "scope": scope} for name, iou, scope in (
        ("cam_threshold", 0.2, "train_scenes"), ("pseudo_labels", 0.3, "train_scenes"),
        ("prediction", 0.4, "test_scenes"), ("supervised_reference", 0.8, "test_scenes"))}
    report, flat = collect_metrics(**stages)
    assert list(report) == [*stages, "weak_to_full_ratio"]
    assert report["weak_to_full_ratio"]["value"] == pytest.approx(0.5)
    assert flat["weak_to_full_ratio"]["value"] == pytest.approx(0.5)
    assert flat["weak_to_full_ratio.toy"]["value"] == pytest.approx(0.5)
    # Per-source stage metrics stay as they were: `<stage>.<source>.<metric>`.
    assert flat["supervised_reference.toy.iou"]["value"] == pytest.approx(0.8)
    assert flat["pseudo_labels.toy.iou"]["value"] == pytest.approx(0.3)
    json.dumps(report, allow_nan=False)


def test_evaluation_pipeline_measures_the_supervised_predictions():
    nodes = {n.name: n for n in evaluation_pipeline().nodes}
    assert nodes["evaluate_supervised_reference"].inputs[0] == "supervised_predictions"
    assert "supervised_reference_metrics" in nodes["collect_metrics"].inputs


def _stitched_metrics(predictions: dict, masks: dict, index: pd.DataFrame, scenes: pd.DataFrame) -> dict:
    """Yesterday's test-scene evaluation: every scene stitched whole from its tile masks, compared at once."""
    accumulator = ConfusionAccumulator(2)
    for scene in scenes.itertuples():
        tiles = index[index.scene_id == scene.scene_id]
        target = scene_ground_truth(masks, tiles, scene.height, scene.width)
        accumulator.update(decode_prediction(predictions[scene.scene_id], 1), target)
    return accumulator.metrics(["background", "landslide"])


def _random_test_scenes(rng) -> tuple:
    """Two test scenes of awkward sizes in 32-px tiles (border tiles padded 255), masks with ignore pixels."""
    rows, masks, predictions, scenes = [], {}, {}, []
    for scene_id, (height, width) in {"a": (70, 90), "b": (33, 64)}.items():
        truth = rng.choice([0, 1, 255], (height, width), p=[0.6, 0.3, 0.1]).astype(np.uint8)
        predictions[scene_id] = np.where(rng.random((height, width)) < 0.4, 255, 0).astype(np.uint8)
        for window, tile in iter_tiles(truth, 32, 0.0, pad_value=255):
            tile_id = f"{scene_id}__{window.row}_{window.col}"
            masks[tile_id] = tile
            rows.append({"tile_id": tile_id, "scene_id": scene_id, "source": "toy", "row": window.row,
                         "col": window.col, "height": window.height, "width": window.width, "split": "test",
                         "landslide": 1})
        scenes.append({"scene_id": scene_id, "source": "toy", "height": height, "width": width, "split": "test"})
    return predictions, masks, pd.DataFrame(rows), pd.DataFrame(scenes)


def test_window_by_window_evaluation_equals_the_stitched_whole_scene_one(tmp_path):
    predictions, masks, index, scenes = _random_test_scenes(np.random.default_rng(5))
    expected = _stitched_metrics(predictions, masks, index, scenes)
    in_memory = evaluate_predictions(predictions, masks, index, scenes, ["landslide"])
    assert {k: in_memory[k] for k in expected} == expected
    # The same from saved scene rasters, read by window: a GeoTIFF (64-px blocks, not the 32-px tiles) and a PNG.
    utm = Georeference("EPSG:32645", (10.0, 0.0, 500000.0, 0.0, -10.0, 3000000.0))
    write_scene_raster(tmp_path / "a", ArraySceneRaster(predictions["a"], utm), block_size=64)
    write_scene_raster(tmp_path / "b", ArraySceneRaster(predictions["b"]))
    saved = {scene_id: partial(SceneRasterDataset(str(tmp_path / scene_id)).load) for scene_id in predictions}
    from_files = evaluate_predictions(saved, masks, index, scenes, ["landslide"])
    assert {k: from_files[k] for k in expected} == expected and expected["pixels"] > 0


def test_test_tiles_must_cover_their_scene_once():
    predictions, masks, index, scenes = _random_test_scenes(np.random.default_rng(6))
    with pytest.raises(UserInputError, match="do not cover"):
        evaluate_predictions(predictions, masks, index.iloc[1:], scenes, ["landslide"])
    with pytest.raises(UserInputError, match=r"`predictions` of a is \(70, 89\)"):
        evaluate_predictions({**predictions, "a": predictions["a"][:, :89]}, masks, index, scenes, ["landslide"])
