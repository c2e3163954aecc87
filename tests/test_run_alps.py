"""End-to-end: a tiny run with `segmentation_training.pretrain: alps` (superpixel regions, localizer features)."""

from __future__ import annotations

import copy

import mlflow
import numpy as np
import pandas as pd
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from project_files import latest_version
from test_run import TINY_PARAMS

from wsss_project.datasets.png_array import read_png

N_CLUSTERS = 4
ALPS_PARAMS = copy.deepcopy(TINY_PARAMS)
ALPS_PARAMS["segmentation_training"] = {
    **ALPS_PARAMS["segmentation_training"], "pretrain": "alps",
    "alps": {"n_clusters": N_CLUSTERS, "kmeans_batch_tiles": 2, "kmeans_passes": 2, "epochs": 1},
}



def test_an_alps_run_pretrains_on_cluster_maps_end_to_end(project_copy):
    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy, runtime_params=ALPS_PARAMS) as session:
        session.run()

    data = project_copy / "data"
    index = pd.read_parquet(latest_version(data / "02_intermediate" / "tile_index.parquet"))
    train = index[index.split == "train"]
    maps_dir = data / "04_feature" / "alps_cluster_maps"
    assert sorted(p.stem for p in maps_dir.glob("*.png")) == sorted(train.tile_id)
    painted = np.zeros(N_CLUSTERS, dtype=np.int64)
    for tile in train.itertuples():
        cluster_map = read_png(maps_dir / f"{tile.tile_id}.png")
        assert (cluster_map[tile.height :] == 255).all() and (cluster_map[:, tile.width :] == 255).all()
        assert set(np.unique(cluster_map)) <= {*range(N_CLUSTERS), 255}
        painted += np.bincount(cluster_map.ravel(), minlength=256)[:N_CLUSTERS]
    table = pd.read_csv(latest_version(data / "08_reporting" / "alps_cluster_table.csv"))
    assert table["cluster_id"].tolist() == list(range(N_CLUSTERS))
    assert table["pixels"].tolist() == painted.tolist() and painted.sum() > 0

    # The pre-trained body has no output layer, and it is not the binary model's.
    body = torch.load(latest_version(data / "06_models" / "segmentation_pretrained_body.pt"), weights_only=True)
    model = torch.load(latest_version(data / "06_models" / "segmentation_model.pt"), weights_only=True)
    assert body and set(body) < set(model) and not any(k.startswith("head.2.") for k in body)

    mlflow.set_tracking_uri(f"sqlite:///{project_copy / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["wsss_project"]).iloc[0]
    assert run["params.segmentation_training.pretrain"] == "alps"
    assert "metrics.segmentation_pretraining.loss" in run
    assert (data / "07_model_output" / "predictions").is_dir()
