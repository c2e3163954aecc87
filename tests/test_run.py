"""End-to-end: one KedroSession run of the default pipeline on a tiny synthetic config."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import mlflow
import numpy as np
import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from project_files import latest_version

from wsss_project.datasets.png_array import read_png

# Small enough to run the whole default pipeline in well under a minute on 2 CPU cores.
TINY_PARAMS = {
    "data": {"synthetic": {"n_scenes": 4, "height": 256, "width": 320}, "tile_size": 128},
    "localization": {"mil": {"steps": 20, "batch_size": 4, "warmup_fraction": 0.1, "log_every": 10}},
    "segmentation_training": {"epochs": 1, "base_width": 8, "crop_size": 64, "batch_size": 4},
}

STAGES = ("cam_threshold", "pseudo_labels", "prediction", "supervised_reference")



def test_default_pipeline_end_to_end(project_copy):
    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy, runtime_params=TINY_PARAMS) as session:
        session.run()

    data = project_copy / "data"
    index = pd.read_parquet(latest_version(data / "02_intermediate" / "tile_index.parquet"))
    scenes = pd.read_parquet(latest_version(data / "02_intermediate" / "scenes.parquet"))
    assert set(index["split"]) == {"train", "test"}
    assert not set(index.loc[index.split == "train", "scene_id"]) & set(index.loc[index.split == "test", "scene_id"])

    # Every test scene has a prediction at its original size.
    test_scenes = scenes[scenes.split == "test"]
    for scene in test_scenes.itertuples():
        prediction = read_png(data / "07_model_output" / "predictions" / f"{scene.scene_id}.png")
        assert prediction.shape == (scene.height, scene.width)
        assert set(np.unique(prediction)) <= {0, 255}

    # The report has the four stages, each with its scope, and the weak-to-full ratio.
    metrics = json.loads(latest_version(data / "08_reporting" / "metrics.json").read_text())
    assert set(metrics) == {"cam_threshold", "pseudo_labels", "prediction", "supervised_reference", "weak_to_full_ratio"}
    assert {stage: metrics[stage]["scope"] for stage in STAGES} == {
        "cam_threshold": "train_scenes", "pseudo_labels": "train_scenes",
        "prediction": "test_scenes", "supervised_reference": "test_scenes",
    }

    # The train-scene stages agree with an independent computation from the saved PNGs, each
    # scene pixel counted once (owned by the tile whose valid centre is nearest, ties to the first).
    train_tiles = index[index.split == "train"]
    pseudo = lambda t: read_png(data / "04_feature" / "pseudo_masks" / f"{t.tile_id}.png") == 1  # noqa: E731
    threshold = json.loads((data / "03_primary" / "prompt_generation_resolved.json").read_text())["threshold"]
    cam = lambda t: t.landslide == 1 and read_png(data / "03_primary" / "cams" / "landslide" / f"{t.tile_id}.png") > threshold  # noqa: E731
    for stage, claims in (("pseudo_labels", pseudo), ("cam_threshold", cam)):
        tp, fp, fn, pixels = _once_per_scene_pixel(data, train_tiles, scenes, claims)
        assert metrics[stage]["pixels"] == pixels
        assert (metrics[stage]["tp"], metrics[stage]["fp"], metrics[stage]["fn"]) == (tp, fp, fn)
        assert metrics[stage]["iou"] == pytest_approx(tp / max(tp + fp + fn, 1))
    assert metrics["pseudo_labels"]["pixels"] <= scenes.loc[scenes.split == "train", ["height", "width"]].prod(axis=1).sum()
    # The masks table: one row per segmenter mask of the train tiles, every mask kept by default.
    table = pd.read_parquet(latest_version(data / "04_feature" / "pseudo_mask_table.parquet"))
    assert len(table) and set(table["tile_id"]) <= set(train_tiles["tile_id"]) and table["kept"].all()

    # ... and so do the test-scene stages, from the saved scene PNGs and the test tiles' masks.
    for stage, folder in (("prediction", "predictions"), ("supervised_reference", "supervised_predictions")):
        tp = fp = fn = 0
        for scene in test_scenes.itertuples():
            truth = np.full((scene.height, scene.width), 255, np.uint8)
            for t in index[(index.scene_id == scene.scene_id)].itertuples():
                truth[t.row : t.row + t.height, t.col : t.col + t.width] = read_png(
                    data / "02_intermediate" / "tile_masks" / f"{t.tile_id}.png"
                )[: t.height, : t.width]
            pred = read_png(data / "07_model_output" / folder / f"{scene.scene_id}.png") == 255
            gt, valid = truth == 1, truth != 255
            tp += int((pred & gt & valid).sum())
            fp += int((pred & ~gt & valid).sum())
            fn += int((~pred & gt & valid).sum())
        assert metrics[stage]["iou"] == pytest_approx(tp / max(tp + fp + fn, 1))

    # weak_to_full_ratio is the division of the two test-scene IoUs (null when the reference is 0).
    ratio = metrics["weak_to_full_ratio"]
    reference_iou = metrics["supervised_reference"]["iou"]
    assert reference_iou > 0, "the tiny run's supervised reference found nothing: the ratio is untested"
    assert ratio["value"] == pytest_approx(metrics["prediction"]["iou"] / reference_iou)
    # The synthetic scenes are one source: no per-source figures repeating the pooled ones.
    assert set(scenes["source"]) == {"synthetic"}
    assert {stage: metrics[stage]["per_source"] for stage in STAGES} == dict.fromkeys(STAGES, {})
    assert ratio["per_source"] == {}

    # The run is in MLflow with its parameters, the metrics of every stage and the ratio, under a
    # name that says pipeline, dataset, segmenter and T.
    mlflow.set_tracking_uri(f"sqlite:///{project_copy / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["wsss_project"])
    assert len(runs) == 1
    run = runs.iloc[0]
    # T was chosen without masks (threshold: auto) and the run records the value it used.
    assert run["params.prompt_generation.threshold"] == "auto"
    # kedro-mlflow logs sam_labeling flattened: the merge mode is a column of its own.
    assert (run["params.sam_labeling.merge"], run["params.sam_labeling.min_confidence"]) == ("segmenter", "None")
    assert run["metrics.prompt_generation.threshold"] == threshold
    assert (run["tags.segmenter"], run["tags.dataset"], run["tags.prompt_mode"]) == ("grabcut", "synthetic", "point_box")
    assert run["tags.mlflow.runName"] == f"__default__ | synthetic | grabcut | T=auto->{threshold}"
    assert run["tags.runner"] == "SequentialRunner"
    for stage in STAGES:
        assert run[f"metrics.{stage}.iou"] == pytest_approx(metrics[stage]["iou"])
    assert not [key for key in run.index if key.startswith("metrics.") and ".synthetic" in key]
    assert run["metrics.weak_to_full_ratio"] == pytest_approx(ratio["value"])
    assert "metrics.supervised_reference_training.loss" in run

    # The landslide inventory: synthetic scenes have no CRS, so every polygon is in the pixel layer,
    # and their areas add up to the predicted pixels of the test scenes.
    inventory = latest_version(data / "07_model_output" / "landslide_inventory.gpkg")
    layers = {name: gpd.read_file(inventory, layer=name) for name in ("polygons_wgs84", "polygons_pixel")}
    assert len(layers["polygons_wgs84"]) == 0
    predicted = sum(
        int((read_png(data / "07_model_output" / "predictions" / f"{s.scene_id}.png") == 255).sum())
        for s in test_scenes.itertuples()
    )
    assert predicted > 0 and layers["polygons_pixel"]["area_px"].sum() == predicted
    assert set(layers["polygons_pixel"]["scene_id"]) <= set(test_scenes["scene_id"])
    assert run["metrics.inventory.n_polygons"] == len(layers["polygons_pixel"])
    artifacts = mlflow.MlflowClient().list_artifacts(run["run_id"], "inventory")
    assert [a.path for a in artifacts] == ["inventory/landslide_inventory.gpkg"]


def _once_per_scene_pixel(data: Path, train_tiles: pd.DataFrame, scenes: pd.DataFrame, claims) -> tuple[int, ...]:
    """tp, fp, fn and pixel count of a per-tile landslide claim over the train scenes, each scene
    pixel judged once by its owning tile: nearest valid-window centre, ties to the first (row, col)."""
    tp = fp = fn = pixels = 0
    for scene in scenes[scenes.split == "train"].itertuples():
        tiles = list(train_tiles[train_tiles.scene_id == scene.scene_id].sort_values(["row", "col"]).itertuples())
        rr, cc = np.mgrid[0 : scene.height, 0 : scene.width] + 0.5
        distance = np.full((len(tiles), scene.height, scene.width), np.inf)
        for k, t in enumerate(tiles):
            inside = (rr >= t.row) & (rr < t.row + t.height) & (cc >= t.col) & (cc < t.col + t.width)
            d = (rr - t.row - t.height / 2) ** 2 + (cc - t.col - t.width / 2) ** 2
            distance[k][inside] = d[inside]
        owner = distance.argmin(axis=0)  # the first minimum: ties go to the first tile
        assert np.isfinite(distance.min(axis=0)).all()
        pred = np.zeros((scene.height, scene.width), bool)
        truth = np.zeros((scene.height, scene.width), np.uint8)
        for k, t in enumerate(tiles):
            mine = owner[t.row : t.row + t.height, t.col : t.col + t.width] == k
            claim = np.asarray(claims(t))
            claim = np.full((t.height, t.width), bool(claim)) if claim.ndim == 0 else claim[: t.height, : t.width]
            pred[t.row : t.row + t.height, t.col : t.col + t.width][mine] = claim[mine]
            tile_truth = read_png(data / "02_intermediate" / "tile_masks" / f"{t.tile_id}.png")
            truth[t.row : t.row + t.height, t.col : t.col + t.width][mine] = tile_truth[: t.height, : t.width][mine]
        valid, gt = truth != 255, truth == 1
        tp, fp = tp + int((pred & gt & valid).sum()), fp + int((pred & ~gt & valid).sum())
        fn, pixels = fn + int((~pred & gt & valid).sum()), pixels + int(valid.sum())
    return tp, fp, fn, pixels


def pytest_approx(value):
    import pytest

    return pytest.approx(value, abs=1e-9)


PRC_ON = {"ir_loss": {"weight": 0.5, "decoder_width": 8},
          "prc_module": {"enabled": True, "projection_dim": 8, "key_grid": 8}}
TINY_CAM_CLASSIFIER = {"method": "cam_classifier", "epochs": 1, "base_width": 8, "batch_size": 8}


def _run_with_cams_in_the_contract(project_copy: Path, localization: dict) -> Path:
    """A TINY run with these `localization` settings; checks the `cams` contract (uint8, tile-sized, 0
    outside the scene) and that every metrics stage is written; returns the run's data folder."""
    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy,
                             runtime_params={**TINY_PARAMS, "localization": localization}) as session:
        session.run()

    data = project_copy / "data"
    index = pd.read_parquet(latest_version(data / "02_intermediate" / "tile_index.parquet"))
    for tile in index.itertuples():
        cam = read_png(data / "03_primary" / "cams" / "landslide" / f"{tile.tile_id}.png")
        assert cam.dtype == np.uint8 and cam.shape == (128, 128)
        assert not cam[tile.height :].any() and not cam[:, tile.width :].any()  # 0 outside the scene
    assert set(json.loads(latest_version(data / "08_reporting" / "metrics.json").read_text())) >= set(STAGES)
    return data


@pytest.mark.parametrize("method", ["mil", "cam_classifier"])
def test_a_run_with_ir_loss_and_prc_module_on_writes_cams_in_the_contract(project_copy, method):
    localization = {**TINY_PARAMS["localization"], **PRC_ON, **(TINY_CAM_CLASSIFIER if method == "cam_classifier" else {})}
    data = _run_with_cams_in_the_contract(project_copy, localization)
    history = pd.read_csv(data / "08_reporting" / "cam_training_history.csv")
    assert {"ir_loss", "prc_refined_loss", "prc_constraint_loss", "classification_loss"} <= set(history.columns)

    # MLflow says which of PRC's parts were on, and has their loss curves.
    mlflow.set_tracking_uri(f"sqlite:///{project_copy / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["wsss_project"]).iloc[0]
    assert (run["params.localization.ir_loss.weight"], run["params.localization.prc_module.enabled"]) == ("0.5", "True")
    assert run["params.localization.method"] == method
    for curve in ("ir_loss", "prc_refined_loss", "prc_constraint_loss"):
        assert np.isfinite(run[f"metrics.localization.{curve}"])


def test_a_run_with_usr_and_vpe_on_writes_cams_in_the_contract_and_records_the_switches(project_copy):
    localization = {**TINY_PARAMS["localization"], "usr": {"enabled": True, "max_grid": 16},
                    "vpe": {"enabled": True}}
    _run_with_cams_in_the_contract(project_copy, localization)
    mlflow.set_tracking_uri(f"sqlite:///{project_copy / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["wsss_project"]).iloc[0]
    assert (run["params.localization.usr.enabled"], run["params.localization.vpe.enabled"]) == ("True", "True")
    assert run["params.localization.usr.alpha"] == "3"
