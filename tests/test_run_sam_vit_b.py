"""End-to-end with a real-size SAM: a random-weight ViT-B checkpoint, two folder scenes, through evaluation.

Issue 8's "done when": with a random-weight `vit_b` checkpoint, `sam_auto` region voting and SAM +
IOS run end to end on two folder scenes. The checkpoint is segment_anything's own
`sam_model_registry["vit_b"]()` (random init, seeded), saved as a state_dict and loaded back
through `sam_labeling.sam.checkpoint`, so the loading, the checkpoint check and every ViT-B shape
are the real ones. Kept cheap: 256-px scenes in 128-px tiles without overlap, the landslide in one
quadrant, so each run has one positive train tile and so one ViT-B image-encoder pass (SAM embeds
only tiles it prompts or cuts into regions; the test scene is predicted by the ResUNet, not SAM).
The SAM + IOS run also switches on `segmentation_training.refine: ios`, PRC's step 7.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from project_files import latest_version, run_project
from segment_anything import sam_model_registry
from test_run import STAGES, TINY_PARAMS

from wsss_project.contracts import COMPONENTS_KEPT, COMPONENTS_REMOVED, REFINEMENT_PREFIX
from wsss_project.datasets.png_array import read_png
from wsss_project.segmenters.mask_rules import intersection_over_mask

SCENE, TILE = 256, 128
MIN_OVERLAP = 0.5
# Random weights: SAM's predicted IoU and stability are noise, so the generator's quality filters
# are opened (0) to let its masks through; 4 x 4 points = one decoder batch. Its masks then cover
# 40-100 % of a tile (measured), so ALPS's area gate (0.3) would drop them all and leave nothing to
# vote: the gate is opened too (1 keeps every region), the gate itself is tested in test_regions.py.
SAM_AUTO = {"points_per_side": 4, "points_per_batch": 16, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


@pytest.fixture(scope="module")
def vit_b_checkpoint(tmp_path_factory) -> Path:
    """segment_anything's ViT-B with its random initialisation (seeded), saved as a state_dict."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "sam_vit_b_random.pth"
    torch.save(sam_model_registry["vit_b"]().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def two_scenes(tmp_path_factory) -> tuple[Path, Path]:
    """images/ and masks/ of two 256-px scenes of one source, one PNG and one GeoTIFF: green noisy
    ground with a brown 70-px 'landslide' in the top-left quadrant (mask 255 there, 0 elsewhere)."""
    root = tmp_path_factory.mktemp("folder")
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for k, suffix in enumerate((".png", ".tif")):
        image = np.clip(rng.normal((60, 120, 50), 12, (SCENE, SCENE, 3)), 0, 255).astype(np.uint8)
        mask = np.zeros((SCENE, SCENE), np.uint8)
        cv2.circle(mask, (60 + 4 * k, 60), 35, 255, -1)
        image[mask > 0] = np.clip(rng.normal((150, 110, 80), 12, (int((mask > 0).sum()), 3)), 0, 255).astype(np.uint8)
        stem = f"hill_{k:03d}"
        if suffix == ".png":
            cv2.imwrite(str(images / f"{stem}.png"), image[:, :, ::-1])
        else:
            with rasterio.open(images / f"{stem}.tif", "w", driver="GTiff", height=SCENE, width=SCENE, count=3,
                               dtype="uint8") as dst:
                dst.write(image.transpose(2, 0, 1))
        cv2.imwrite(str(masks / f"{stem}.png"), mask)
    return images, masks


def _params(two_scenes: tuple[Path, Path], checkpoint: Path, sam_labeling: dict, **sections) -> dict:
    images, masks = two_scenes
    params = copy.deepcopy(TINY_PARAMS)
    params["data"] = {"source": "folder", "folder": {"images_dir": str(images), "masks_dir": str(masks)},
                      "tile_size": TILE, "overlap": 0.0}
    params["sam_labeling"] = {**sam_labeling, "sam": {"checkpoint": str(checkpoint), "model_type": "vit_b"}}
    for name, values in sections.items():
        params[name] = {**params.get(name, {}), **values}
    return params





def _check_pseudo_masks_and_report(data: Path) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The contract of the pseudo-masks (0/1/255, one positive train tile) and of metrics.json."""
    index = pd.read_parquet(latest_version(data / "02_intermediate" / "tile_index.parquet"))
    scenes = pd.read_parquet(latest_version(data / "02_intermediate" / "scenes.parquet"))
    assert sorted(scenes["split"]) == ["test", "train"] and set(scenes["source"]) == {"hill"}
    train = index[index.split == "train"]
    assert train["landslide"].tolist().count(1) == 1, "one positive train tile: one ViT-B pass per run"
    for tile in train.itertuples():
        pseudo = read_png(data / "04_feature" / "pseudo_masks" / f"{tile.tile_id}.png")
        assert pseudo.shape == (TILE, TILE) and set(np.unique(pseudo)) <= {0, 1, 255}
        if not tile.landslide:
            assert (pseudo == 0).all()
    metrics = json.loads(latest_version(data / "08_reporting" / "metrics.json").read_text())
    assert set(STAGES) <= set(metrics) and "weak_to_full_ratio" in metrics
    for stage in STAGES:
        assert 0 <= metrics[stage]["iou"] <= 1 and metrics[stage]["pixels"] > 0
    threshold = json.loads((data / "03_primary" / "prompt_generation_resolved.json").read_text())["threshold"]
    return index, scenes, threshold


def _mlflow_run(project: Path) -> pd.Series:
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["wsss_project"])
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FINISHED"
    return runs.iloc[0]


def test_sam_with_ios_and_refined_predictions_on_a_random_vit_b(project_copy, two_scenes, vit_b_checkpoint):
    params = _params(two_scenes, vit_b_checkpoint, {"segmenter": "sam", "merge": "ios",
                                                    "ios": {"min_overlap": MIN_OVERLAP}},
                     segmentation_training={"refine": "ios"})
    data = run_project(project_copy, params)
    index, scenes, threshold = _check_pseudo_masks_and_report(data)

    # The masks table: one row per SAM mask of the positive train tile, SAM's confidences measured,
    # and the IOS verdict applied (kept exactly when IOS >= min_overlap; the rest became ignore).
    table = pd.read_parquet(latest_version(data / "04_feature" / "pseudo_mask_table.parquet"))
    positive = index[(index.split == "train") & (index.landslide == 1)]["tile_id"].tolist()
    assert len(table) >= 1 and set(table["tile_id"]) == set(positive)
    for column in ("stability_score", "ios"):
        assert table[column].between(0, 1).all(), column
    assert np.isfinite(table["predicted_iou"]).all()  # SAM's IoU head: a regression, unbounded with random weights
    assert (table["confidence_name"] == "stability_score").all()
    assert (table["kept"] == (table["ios"] >= MIN_OVERLAP)).all()
    assert set(table.loc[~table["kept"], "rejected_by"]) <= {"ios"}
    pseudo = read_png(data / "04_feature" / "pseudo_masks" / f"{positive[0]}.png")
    if not table["kept"].any() and (table["area"] > 0).any():
        assert (pseudo == 255).any(), "a rejected mask's pixels are ignore"

    # The refined predictions: every component left lies mostly where the test tiles' CAM > T.
    for scene in scenes[scenes.split == "test"].itertuples():
        prediction = read_png(data / "07_model_output" / "predictions" / f"{scene.scene_id}.png")
        assert prediction.shape == (scene.height, scene.width) and set(np.unique(prediction)) <= {0, 255}
        cam = np.zeros((scene.height, scene.width), np.uint8)
        for t in index[index.scene_id == scene.scene_id].itertuples():
            tile_cam = read_png(data / "03_primary" / "cams" / "landslide" / f"{t.tile_id}.png")
            cam[t.row : t.row + t.height, t.col : t.col + t.width] = tile_cam[: t.height, : t.width]
        n_components, labels = cv2.connectedComponents((prediction > 0).astype(np.uint8), connectivity=8)
        components = np.stack([labels == k for k in range(1, n_components)]) if n_components > 1 else np.zeros(
            (0, *labels.shape), bool)
        assert (intersection_over_mask(components, cam > threshold) >= MIN_OVERLAP).all()

    run = _mlflow_run(project_copy)
    assert (run["tags.segmenter"], run["params.sam_labeling.merge"]) == ("sam", "ios")
    assert run["params.sam_labeling.sam.model_type"] == "vit_b"
    assert run["params.segmentation_training.refine"] == "ios"
    assert run[f"metrics.{REFINEMENT_PREFIX}.{COMPONENTS_KEPT}"] == n_components - 1
    assert run[f"metrics.{REFINEMENT_PREFIX}.{COMPONENTS_REMOVED}"] >= 0


def test_sam_auto_region_voting_on_a_random_vit_b(project_copy, two_scenes, vit_b_checkpoint):
    params = _params(two_scenes, vit_b_checkpoint,
                     {"segmenter": "regions", "unprompted_positive": "background",
                      "regions": {"source": "sam_auto", "area_gate": 1.0, "sam_auto": SAM_AUTO}})
    data = run_project(project_copy, params)
    index, _, threshold = _check_pseudo_masks_and_report(data)

    # SAM's automatic masks reached the voting: the positive tile is covered by regions (with
    # unprompted_positive: background, a tile whose regions all lose is 0 where they cover it and 255
    # only where none does), and every pixel voted landslide lies in regions whose mean CAM exceeds T.
    tile_id = index[(index.split == "train") & (index.landslide == 1)]["tile_id"].iloc[0]
    pseudo = read_png(data / "04_feature" / "pseudo_masks" / f"{tile_id}.png")
    assert (pseudo != 255).any(), "no SAM region covered the positive tile"
    if (pseudo == 1).any():
        cam = read_png(data / "03_primary" / "cams" / "landslide" / f"{tile_id}.png")
        assert cam[pseudo == 1].mean() > threshold
    # Region voting makes no segmenter masks: its masks table is empty.
    assert pd.read_parquet(latest_version(data / "04_feature" / "pseudo_mask_table.parquet")).empty

    run = _mlflow_run(project_copy)
    assert run["tags.segmenter"] == "regions"
    assert run["params.sam_labeling.regions.source"] == "sam_auto"
    assert run["params.sam_labeling.sam.model_type"] == "vit_b"
