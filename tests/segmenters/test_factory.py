"""build_segmenter: auto / sam / grabcut selection and errors."""

from __future__ import annotations

import logging

import pytest
import torch

from wsss_project.errors import UserInputError
from wsss_project.segmenters.factory import build_segmenter
from wsss_project.segmenters.grabcut import GrabCutSegmenter

GRABCUT = {
    "iterations": 5,
    "point_radius": 3,
    "point_neighbourhood_radius": 24,
    "cam_guided": True,
    "prior_threshold": 90,
}


def _params(segmenter: str, checkpoint=None) -> dict:
    return {
        "segmenter": segmenter,
        "sam": {"checkpoint": checkpoint, "model_type": "vit_b", "multimask_output": True},
        "grabcut": dict(GRABCUT),
    }


def test_auto_without_checkpoint_uses_grabcut_and_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="wsss_project.segmenters.factory"):
        segmenter = build_segmenter(_params("auto"), torch.device("cpu"))
    assert isinstance(segmenter, GrabCutSegmenter) and segmenter.name == "grabcut"
    assert any(
        "No SAM checkpoint configured (sam_labeling.sam.checkpoint)" in r.getMessage()
        and "GrabCut" in r.getMessage()
        for r in caplog.records
    )


def test_grabcut_explicit():
    assert isinstance(build_segmenter(_params("grabcut"), "cpu"), GrabCutSegmenter)


@pytest.mark.parametrize("choice", ["sam", "auto"])
def test_missing_checkpoint_names_the_path(choice, tmp_path):
    missing = tmp_path / "nowhere" / "sam_vit_b.pth"
    with pytest.raises(UserInputError) as info:
        build_segmenter(_params(choice, str(missing)), "cpu")
    assert str(missing) in str(info.value)
    assert "sam_labeling.sam.checkpoint" in str(info.value)


def test_sam_without_checkpoint_is_an_error():
    with pytest.raises(ValueError, match="sam_labeling.sam.checkpoint"):
        build_segmenter(_params("sam"), "cpu")


def test_invalid_name():
    with pytest.raises(ValueError, match="sam_labeling.segmenter"):
        build_segmenter(_params("sam2"), "cpu")
