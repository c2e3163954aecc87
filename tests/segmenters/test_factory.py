"""build_segmenter and resolve_segmenter_name: auto / sam / grabcut selection and errors."""

from __future__ import annotations

import logging

import pytest
import torch

from wsss_project.errors import UserInputError
from wsss_project.segmenters.factory import build_segmenter, resolve_segmenter_name
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
        "sam": {"checkpoint": checkpoint, "model_type": "vit_b", "multimask_output": True,
                "stability_score_offset": 1.0},
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


@pytest.mark.parametrize(
    "choice, checkpoint, expected",
    [("auto", None, "grabcut"), ("auto", "sam_vit_b.pth", "sam"), ("sam", None, "sam"),
     ("grabcut", "sam_vit_b.pth", "grabcut")],
)
def test_resolve_segmenter_name(choice, checkpoint, expected):
    assert resolve_segmenter_name(_params(choice, checkpoint)) == expected


def test_resolve_segmenter_name_touches_no_file(tmp_path):
    # a checkpoint that is set but missing still means sam: build_segmenter then names the path
    assert resolve_segmenter_name(_params("auto", str(tmp_path / "missing.pth"))) == "sam"
    assert resolve_segmenter_name({"segmenter": "auto"}) == "grabcut"


def test_the_built_segmenter_is_the_resolved_one():
    params = _params("auto")
    assert build_segmenter(params, "cpu").name == resolve_segmenter_name(params)
