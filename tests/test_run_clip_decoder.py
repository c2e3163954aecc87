"""End-to-end: a tiny default run with `segmentation_training.model: clip_decoder` on a random-weight CLIP."""

from __future__ import annotations

import copy
import json

import mlflow
import numpy as np
import pandas as pd
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from project_files import latest_version
from test_run import STAGES, TINY_PARAMS
from tiny_foundation import write_tiny_clip

from wsss_project.datasets.png_array import read_png

TINY_DECODER = {"adapter_dim": 8, "decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2, "epochs": 2,
                "batch_size": 4, "feature_batch_size": 8}



def test_a_clip_decoder_run_reaches_evaluation_with_predictions_in_the_contract(project_copy):
    config, checkpoint = write_tiny_clip(project_copy / "clip")
    params = copy.deepcopy(TINY_PARAMS)
    # Not TINY's ResUNet keys: clip_decoder does not read them, so the schema refuses them.
    params["segmentation_training"] = {"model": "clip_decoder",
                                       "clip_decoder": TINY_DECODER}
    params["text_prototype_kb"] = {"clip": {"model_name": str(config), "checkpoint": str(checkpoint)}}
    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy, runtime_params=params) as session:
        session.run()

    data = project_copy / "data"
    scenes = pd.read_parquet(latest_version(data / "02_intermediate" / "scenes.parquet"))
    for folder in ("predictions", "supervised_predictions"):
        for scene in scenes[scenes.split == "test"].itertuples():
            prediction = read_png(data / "07_model_output" / folder / f"{scene.scene_id}.png")
            assert prediction.shape == (scene.height, scene.width) and set(np.unique(prediction)) <= {0, 255}
    metrics = json.loads(latest_version(data / "08_reporting" / "metrics.json").read_text())
    assert set(STAGES) <= set(metrics) and all(0 <= metrics[stage]["iou"] <= 1 for stage in STAGES)

    # Both models are clip decoders: adapter + decoder only, naming the CLIP they need; no CLIP weight saved.
    for name in ("segmentation_model.pt", "supervised_model.pt"):
        state = torch.load(latest_version(data / "06_models" / name), weights_only=True)
        assert state["_extra_state"]["blocks"] == [1, 2]
        assert {key.split(".")[0] for key in state} == {"adapter", "blocks", "norm", "head", "_extra_state"}
    history = pd.read_csv(data / "08_reporting" / "segmentation_training_history.csv")
    assert {"seg_loss", "aff_loss"} <= set(history.columns) and len(history) == TINY_DECODER["epochs"]

    mlflow.set_tracking_uri(f"sqlite:///{project_copy / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["wsss_project"]).iloc[0]
    assert run["params.segmentation_training.model"] == "clip_decoder"
    assert np.isfinite(run["metrics.segmentation_training.aff_loss"])
