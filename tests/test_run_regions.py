"""End-to-end: a tiny run with `sam_labeling.segmenter: regions` (superpixel region voting)."""

from __future__ import annotations

import copy
import json

import mlflow
import numpy as np
import pandas as pd
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from project_files import latest_version
from test_run import TINY_PARAMS

from wsss_project.datasets.png_array import read_png
from wsss_project.hooks import NO_PROMPTS

REGIONS_PARAMS = {**copy.deepcopy(TINY_PARAMS), "sam_labeling": {"segmenter": "regions"}}



def test_a_regions_run_labels_by_region_voting_end_to_end(project_copy):
    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy, runtime_params=REGIONS_PARAMS) as session:
        session.run()

    data = project_copy / "data"
    index = pd.read_parquet(latest_version(data / "02_intermediate" / "tile_index.parquet"))
    threshold = json.loads((data / "03_primary" / "prompt_generation_resolved.json").read_text())["threshold"]
    train = index[index.split == "train"]
    assert set(train.landslide) == {0, 1}
    for tile in train.itertuples():
        pseudo = read_png(data / "04_feature" / "pseudo_masks" / f"{tile.tile_id}.png")
        inside = pseudo[: tile.height, : tile.width]
        assert (pseudo[tile.height :] == 255).all() and (pseudo[:, tile.width :] == 255).all()
        if not tile.landslide:
            assert (inside == 0).all()
            continue
        assert set(np.unique(inside)) <= {0, 1, 255}
        if (inside == 1).any():  # every landslide pixel lies in a region whose mean CAM exceeds T
            cam = read_png(data / "03_primary" / "cams" / "landslide" / f"{tile.tile_id}.png")[: tile.height, : tile.width]
            assert cam[inside == 1].mean() > threshold
    positive = train[train.landslide == 1]
    assert any((read_png(data / "04_feature" / "pseudo_masks" / f"{t}.png") == 1).any() for t in positive.tile_id)

    # Segmentation training and evaluation ran unchanged on the region pseudo-masks.
    metrics = json.loads(latest_version(data / "08_reporting" / "metrics.json").read_text())
    assert {"pseudo_labels", "prediction", "weak_to_full_ratio"} <= set(metrics)
    assert metrics["pseudo_labels"]["pixels"] > 0

    mlflow.set_tracking_uri(f"sqlite:///{project_copy / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["wsss_project"]).iloc[0]
    assert (run["tags.segmenter"], run["tags.prompt_mode"]) == ("regions", NO_PROMPTS)
    assert run["params.sam_labeling.regions.source"] == "superpixels"
