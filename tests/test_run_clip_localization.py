"""End-to-end: `localization.method: clip` with tiny random CLIP and DINOv2 checkpoints on two folder
scenes: text_prototype_kb, then the default pipeline with USR (CLIP attentions + DINOv2) and VPE on,
through prompt generation, GrabCut pseudo-labels and the ResUNet to evaluation."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from project_files import latest_version
from test_run import STAGES, TINY_PARAMS
from test_run_clip_decoder import TINY_DECODER
from tiny_foundation import (
    CLIP_IMAGE_SIZE,
    CLIP_LAYERS,
    DINO_IMAGE_SIZE,
    write_tiny_clip,
    write_tiny_dino,
)

from wsss_project.datasets.png_array import read_png
from wsss_project.errors import UserInputError

SCENE, TILE = 256, 128


def _two_scenes(root: Path) -> tuple[Path, Path]:
    """Two 256-px PNG scenes of one source, a brown disc 'landslide' in the top-left quadrant."""
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):
        image = np.clip(rng.normal((60, 120, 50), 12, (SCENE, SCENE, 3)), 0, 255).astype(np.uint8)
        mask = np.zeros((SCENE, SCENE), np.uint8)
        cv2.circle(mask, (60 + 4 * k, 60), 35, 255, -1)
        image[mask > 0] = np.clip(rng.normal((150, 110, 80), 12, (int((mask > 0).sum()), 3)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(images / f"hill_{k:03d}.png"), image[:, :, ::-1])
        cv2.imwrite(str(masks / f"hill_{k:03d}.png"), mask)
    return images, masks


def _params(tmp_path: Path) -> dict:
    images, masks = _two_scenes(tmp_path / "folder")
    config, checkpoint = write_tiny_clip(tmp_path / "clip")
    params = copy.deepcopy(TINY_PARAMS)
    params["data"] = {"source": "folder", "folder": {"images_dir": str(images), "masks_dir": str(masks)},
                      "tile_size": TILE, "overlap": 0.0}
    params["text_prototype_kb"] = {"clip": {"model_name": str(config), "checkpoint": str(checkpoint)},
                                   "dino": {"path": str(write_tiny_dino(tmp_path / "dino"))},
                                   "n_prototypes": 4, "top_k": 2}
    params["localization"] = {
        "method": "clip",
        "clip": {"image_size": CLIP_IMAGE_SIZE, "dino_image_size": DINO_IMAGE_SIZE, "batch_size": 4},
        "usr": {"enabled": True, "attention_layers": CLIP_LAYERS},
        "vpe": {"enabled": True},
    }
    # Issue 9's whole chain: CLIP CAMs refined by USR + VPE, then the CLIP adapter + decoder segmenter.
    # Not TINY's ResUNet keys: clip_decoder does not read them, so the schema refuses them.
    params["segmentation_training"] = {"model": "clip_decoder",
                                       "clip_decoder": {**TINY_DECODER, "image_size": CLIP_IMAGE_SIZE}}
    return params


def _session_run(project: Path, params: dict, pipeline: str | None = None) -> None:
    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run(pipeline_names=[pipeline] if pipeline else None)



def test_clip_localization_without_text_prototypes_names_the_pipeline_to_run(project_copy, tmp_path):
    with pytest.raises(UserInputError, match="kedro run --pipeline text_prototype_kb"):
        _session_run(project_copy, _params(tmp_path))


def test_clip_localization_with_usr_and_vpe_runs_end_to_end(project_copy, tmp_path):
    params = _params(tmp_path)
    _session_run(project_copy, params, "text_prototype_kb")
    _session_run(project_copy, params)

    data = project_copy / "data"
    state = torch.load(latest_version(data / "06_models" / "cam_model.pt"), weights_only=True)
    assert list(state) == ["text_embeddings"]  # only T_c is saved, never CLIP's weights
    index = pd.read_parquet(latest_version(data / "02_intermediate" / "tile_index.parquet"))
    assert set(index["split"]) == {"train", "test"}
    for tile in index.itertuples():
        cam = read_png(data / "03_primary" / "cams" / "landslide" / f"{tile.tile_id}.png")
        assert cam.dtype == np.uint8 and cam.shape == (TILE, TILE)
    metrics = json.loads(latest_version(data / "08_reporting" / "metrics.json").read_text())
    assert set(metrics) >= set(STAGES)
    assert all(np.isfinite(metrics[stage]["iou"]) for stage in STAGES if "iou" in metrics[stage])
    scenes = pd.read_parquet(latest_version(data / "02_intermediate" / "scenes.parquet"))
    for scene in scenes[scenes.split == "test"].itertuples():
        prediction = read_png(data / "07_model_output" / "predictions" / f"{scene.scene_id}.png")
        assert prediction.shape == (scene.height, scene.width) and set(np.unique(prediction)) <= {0, 255}
    segmenter = torch.load(latest_version(data / "06_models" / "segmentation_model.pt"), weights_only=True)
    assert "adapter" in {key.split(".")[0] for key in segmenter}  # the clip_decoder, not the ResUNet
    mlflow.set_tracking_uri(f"sqlite:///{project_copy / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["wsss_project"]).iloc[0]
    assert run["params.localization.method"] == "clip"
    assert (run["params.localization.usr.enabled"], run["params.localization.vpe.enabled"]) == ("True", "True")
    assert run["params.segmentation_training.model"] == "clip_decoder"
