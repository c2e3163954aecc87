"""load_sam: errors, and the real vit_b loading path with random weights (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import sam_model_registry

from wsss_project.errors import UserInputError
from wsss_project.foundation.sam import check_sam_checkpoint, load_sam
from wsss_project.segmenters.base import prompts_for_mode
from wsss_project.segmenters.sam import SamSegmenter

TILE = 256
DEVICE = torch.device("cpu")


def test_unknown_model_type_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="sam_labeling.sam.model_type") as info:
        load_sam("vit_x", tmp_path / "x.pth", DEVICE)
    assert "vit_b" in str(info.value)


def test_missing_checkpoint_names_the_path(tmp_path):
    missing = tmp_path / "sam_vit_b_01ec64.pth"
    with pytest.raises(UserInputError, match="sam_labeling.sam.checkpoint") as info:
        load_sam("vit_b", missing, DEVICE)
    assert str(missing) in str(info.value)


@pytest.fixture(scope="module")
def vit_b_checkpoint(tmp_path_factory) -> Path:
    """segment-anything's real vit_b with random weights, saved once."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam_vit_b") / "sam_vit_b_random.pth"
    torch.save(sam_model_registry["vit_b"](checkpoint=None).state_dict(), path)
    return path


@pytest.mark.slow
def test_pre_run_check_accepts_the_declared_model_type_only(vit_b_checkpoint):
    check_sam_checkpoint("vit_b", vit_b_checkpoint)
    with pytest.raises(UserInputError, match="does not hold a SAM `sam_labeling.sam.model_type: vit_l`") as info:
        check_sam_checkpoint("vit_l", vit_b_checkpoint)
    assert str(vit_b_checkpoint) in str(info.value) and "shape mismatches" in str(info.value)


@pytest.mark.slow
def test_wrong_model_type_for_checkpoint(vit_b_checkpoint):
    with pytest.raises(UserInputError, match="does not match"):
        load_sam("vit_l", vit_b_checkpoint, DEVICE)


@pytest.mark.slow
def test_vit_b_loads_and_segments(vit_b_checkpoint):
    model = load_sam("vit_b", vit_b_checkpoint, DEVICE)
    reference = torch.load(vit_b_checkpoint, map_location="cpu", weights_only=True)
    name = "mask_decoder.iou_prediction_head.layers.0.weight"
    assert torch.equal(model.state_dict()[name], reference[name])
    assert not model.training

    segmenter = SamSegmenter(model, DEVICE, {"multimask_output": True, "stability_score_offset": 1.0})
    image = np.random.default_rng(0).integers(0, 256, (TILE, TILE, 3), dtype=np.uint8)
    state = segmenter.embed(image)
    assert state.arrays["embedding"].shape == (1, 256, 64, 64)
    assert state.arrays["input_size"].tolist() == [1024, 1024]
    boxes, points, _ = prompts_for_mode(
        np.array([[10, 10, 80, 60], [120, 100, 100, 120]]),
        np.array([[50, 40], [np.nan, np.nan]]),
        "point_box",
    )
    masks, scores = segmenter.segment(state, boxes, points)
    assert masks.shape == (2, TILE, TILE) and scores.shape == (2,)
