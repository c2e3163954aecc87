"""End-to-end: one KedroSession run of the default pipeline on a tiny synthetic config."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from wsss_project.datasets.png_array import read_png

# Small enough to run the whole default pipeline in well under a minute on 2 CPU cores.
TINY_PARAMS = {
    "data": {"synthetic": {"n_scenes": 4, "height": 256, "width": 320}, "tile_size": 128},
    "localization": {"epochs": 2, "base_width": 8, "batch_size": 8},
    "segmentation_training": {"epochs": 1, "base_width": 8, "crop_size": 64, "batch_size": 4},
}



def _latest(path: Path) -> Path:
    """The newest version of a versioned dataset file."""
    return sorted(path.iterdir())[-1] / path.name


def test_default_pipeline_end_to_end(project_copy):
    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy, runtime_params=TINY_PARAMS) as session:
        session.run()

    data = project_copy / "data"
    index = pd.read_parquet(_latest(data / "02_intermediate" / "tile_index.parquet"))
    scenes = pd.read_parquet(_latest(data / "02_intermediate" / "scenes.parquet"))
    assert set(index["split"]) == {"train", "test"}
    assert not set(index.loc[index.split == "train", "scene_id"]) & set(index.loc[index.split == "test", "scene_id"])

    # Every test scene has a prediction at its original size.
    test_scenes = scenes[scenes.split == "test"]
    for scene in test_scenes.itertuples():
        prediction = read_png(data / "07_model_output" / "predictions" / f"{scene.scene_id}.png")
        assert prediction.shape == (scene.height, scene.width)
        assert set(np.unique(prediction)) <= {0, 255}

    # The reported pseudo-label metrics agree with an independent computation from saved masks.
    metrics = json.loads(_latest(data / "08_reporting" / "metrics.json").read_text())
    assert set(metrics) == {"cam_threshold", "pseudo_labels", "prediction"}
    tp = fp = fn = 0
    for tile_id in index.loc[index.split == "train", "tile_id"]:
        pseudo = read_png(data / "04_feature" / "pseudo_masks" / f"{tile_id}.png")
        truth = read_png(data / "02_intermediate" / "tile_masks" / f"{tile_id}.png")
        valid = truth != 255
        pred, gt = (pseudo == 1) & valid, (truth == 1) & valid
        tp, fp, fn = tp + int((pred & gt).sum()), fp + int((pred & ~gt).sum()), fn + int((~pred & gt).sum())
    assert metrics["pseudo_labels"]["iou"] == pytest_approx(tp / max(tp + fp + fn, 1))

    # ... and so do the prediction metrics, from the saved scene PNGs and the test tiles' masks.
    tp = fp = fn = 0
    for scene in test_scenes.itertuples():
        truth = np.full((scene.height, scene.width), 255, np.uint8)
        for t in index[(index.scene_id == scene.scene_id)].itertuples():
            truth[t.row : t.row + t.height, t.col : t.col + t.width] = read_png(
                data / "02_intermediate" / "tile_masks" / f"{t.tile_id}.png"
            )[: t.height, : t.width]
        pred = read_png(data / "07_model_output" / "predictions" / f"{scene.scene_id}.png") == 255
        gt, valid = truth == 1, truth != 255
        tp += int((pred & gt & valid).sum())
        fp += int((pred & ~gt & valid).sum())
        fn += int((~pred & gt & valid).sum())
    assert metrics["prediction"]["iou"] == pytest_approx(tp / max(tp + fp + fn, 1))

    # The run is in MLflow with its parameters and the metrics of every stage.
    mlflow.set_tracking_uri(f"sqlite:///{project_copy / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["wsss_project"])
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["params.prompt_generation.threshold"] == "120"
    assert (run["tags.segmenter"], run["tags.dataset"], run["tags.prompt_mode"]) == ("grabcut", "synthetic", "point_box")
    for stage in ("cam_threshold", "pseudo_labels", "prediction"):
        assert run[f"metrics.{stage}.iou"] == pytest_approx(metrics[stage]["iou"])


def pytest_approx(value):
    import pytest

    return pytest.approx(value, abs=1e-9)
