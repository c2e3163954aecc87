"""label_tiles with `segmenter: regions`: region voting on the toy tiles, in the pseudo_masks contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tiny_sam import build_tiny_sam, register_tiny_sam
from toy_tiles import PROMPT_GENERATION, REGIONS, SAM_LABELING, toy_tiles

from wsss_project.evaluation.metrics import binary_mask_metrics
from wsss_project.pipelines.sam_labeling.nodes import build_segmenter, label_tiles

REGION_LABELING = {**SAM_LABELING, "segmenter": "regions"}
NO_PROMPTS = pd.DataFrame(columns=["tile_id", "class_id", "x0", "y0", "w", "h", "px", "py"])


def _label(params=REGION_LABELING, threshold=120, index=None):
    tiles, masks, cams, toy_index = toy_tiles()
    index = toy_index if index is None else index
    pg = {**PROMPT_GENERATION, "threshold": threshold}
    # No prompts at all: region voting must not need them.
    return label_tiles(build_segmenter(params, "cpu"), tiles, cams, NO_PROMPTS, index, params, pg, ["landslide"]), masks, index


def test_region_voting_finds_the_landslides_without_prompts():
    pseudo, masks, index = _label()
    for tile in index.itertuples():
        mask = pseudo[tile.tile_id]
        assert mask.dtype == np.uint8 and mask.shape == masks[tile.tile_id].shape
        if tile.landslide:
            assert binary_mask_metrics(mask, masks[tile.tile_id])["iou"] > 0.7
        else:
            assert (mask == 0).all()  # negative tiles are all background


def test_the_threshold_decides_which_regions_vote():
    low, _, index = _label(threshold=20)
    high, _, _ = _label(threshold=200)
    for tile in index[index.landslide == 1].itertuples():
        assert (low[tile.tile_id] == 1).sum() > (high[tile.tile_id] == 1).sum()  # a lower T: more regions above it
    never, _, _ = _label(threshold=255)  # no mean exceeds 255: every positive tile is unvoted -> ignore
    assert all((never[t] == 255).all() for t in index.loc[index.landslide == 1, "tile_id"])


def test_pixels_outside_the_scene_are_ignored():
    index = toy_tiles()[3]
    index["height"], index["width"] = 40, 50
    labelled, _, _ = _label(index=index)
    for tile in index.itertuples():
        pseudo = labelled[tile.tile_id]
        assert (pseudo[40:] == 255).all() and (pseudo[:, 50:] == 255).all()
        assert (pseudo[:40, :50] == 1).any() == bool(tile.landslide)


def test_sam_auto_with_a_random_sam_labels_two_tiles(tmp_path, monkeypatch):
    """The tiny random SAM keeps no mask at SAM's default thresholds: the positive tile has no
    region and is ignored, the negative tile stays background; nothing fails."""
    model_type = register_tiny_sam(monkeypatch)
    checkpoint = tmp_path / "tiny.pth"
    torch.save(build_tiny_sam().state_dict(), checkpoint)
    params = {**REGION_LABELING, "regions": {**REGIONS, "source": "sam_auto",
                                             "sam_auto": {**REGIONS["sam_auto"], "points_per_side": 8}},
              "sam": {**SAM_LABELING["sam"], "checkpoint": str(checkpoint), "model_type": model_type}}
    index = toy_tiles()[3].iloc[:2]  # one negative, one positive tile
    pseudo, _, _ = _label(params, index=index)
    assert set(pseudo) == set(index.tile_id)
    negative, positive = index.tile_id
    assert (pseudo[negative] == 0).all() and (pseudo[positive] == 255).all()
    # At quality thresholds 0 it keeps masks: the positive tile gets regions, background or landslide.
    kept = {**params, "regions": {**params["regions"], "area_gate": 1.0, "sam_auto": {
        **params["regions"]["sam_auto"], "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}}}
    pseudo, _, _ = _label(kept, threshold=0, index=index)
    assert (pseudo[negative] == 0).all() and (pseudo[positive] == 1).any()
