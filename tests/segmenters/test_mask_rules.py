"""The IOS rule and the per-mask confidences on hand-built masks and CAMs."""

from __future__ import annotations

import numpy as np
import pytest
from toy_tiles import GRABCUT, SAM_LABELING

from wsss_project.contracts import IGNORE_INDEX
from wsss_project.errors import UserInputError
from wsss_project.segmenters.base import Segmentation
from wsss_project.segmenters.grabcut import GrabCutSegmenter
from wsss_project.segmenters.mask_rules import MaskRule, ignore_rejected, intersection_over_mask

SIZE = 10
T = 100


def _half_inside() -> tuple[np.ndarray, np.ndarray]:
    """One mask of 20 px (rows 0..1), the CAM above T on exactly half of it (columns 0..4)."""
    mask = np.zeros((1, SIZE, SIZE), bool)
    mask[0, :2, :] = True
    heatmap = np.zeros((SIZE, SIZE), np.uint8)
    heatmap[:, :5] = T + 1
    return mask, heatmap


def _rule(**overrides) -> MaskRule:
    values = {"merge": "ios", "min_overlap": 0.5, "min_confidence": None, "confidence": "ios", "threshold": T}
    return MaskRule(**{**values, **overrides})


ALL_VALID = np.ones((SIZE, SIZE), bool)


def test_ios_is_the_intersection_over_the_mask_not_the_union():
    mask, heatmap = _half_inside()
    # The CAM region (50 px) is larger than the mask (20 px): IoU would be 10/60, IOS is 10/20.
    assert intersection_over_mask(mask, heatmap > T).tolist() == [0.5]
    assert intersection_over_mask(np.zeros((1, SIZE, SIZE), bool), heatmap > T).tolist() == [0.0]  # empty


def test_the_cam_region_is_strictly_above_t_as_the_prompts_cut_it():
    mask, heatmap = _half_inside()
    at_t = np.where(heatmap > 0, T, 0).astype(np.uint8)  # exactly T is not in the region
    assert _rule().judge(Segmentation(mask, np.ones(1)), at_t, ALL_VALID).ios.tolist() == [0.0]


@pytest.mark.parametrize(("min_overlap", "kept"), [(0.4, True), (0.5, True), (0.6, False)])
def test_a_mask_half_inside_the_cam_region_is_kept_only_up_to_min_overlap(min_overlap, kept):
    mask, heatmap = _half_inside()
    verdicts = _rule(min_overlap=min_overlap).judge(Segmentation(mask, np.ones(1)), heatmap, ALL_VALID)
    assert verdicts.kept.tolist() == [kept]
    assert verdicts.rejected_by.tolist() == ["" if kept else "ios"]


def test_merge_segmenter_keeps_a_mask_the_ios_rule_would_reject():
    mask, heatmap = _half_inside()
    verdicts = _rule(merge="segmenter", min_overlap=0.9).judge(Segmentation(mask, np.ones(1)), heatmap, ALL_VALID)
    assert verdicts.kept.tolist() == [True] and verdicts.ios.tolist() == [0.5]  # measured, not applied


def test_ios_counts_only_pixels_inside_the_scene():
    mask, heatmap = _half_inside()
    valid = np.zeros((SIZE, SIZE), bool)
    valid[:, :5] = True  # the right half is padding (its CAM is 0 by contract)
    verdicts = _rule(min_overlap=0.9).judge(Segmentation(mask, np.ones(1)), heatmap, valid)
    assert verdicts.ios.tolist() == [1.0] and verdicts.area.tolist() == [10] and verdicts.kept.all()


def test_min_confidence_rejects_the_masks_below_it_on_the_named_confidence():
    masks = np.zeros((3, SIZE, SIZE), bool)
    masks[:, :2, :5] = True  # all inside the CAM region: IOS 1
    _, heatmap = _half_inside()
    result = Segmentation(masks, np.ones(3), {"stability_score": np.array([0.2, 0.8, 0.5])})
    verdicts = _rule(merge="segmenter", min_confidence=0.5, confidence="stability_score").judge(
        result, heatmap, ALL_VALID)
    assert verdicts.kept.tolist() == [False, True, True]  # 0.5 itself passes
    assert verdicts.rejected_by.tolist() == ["min_confidence", "", ""]
    assert verdicts.confidence.tolist() == [0.2, 0.8, 0.5]


def test_a_mask_failing_both_checks_is_named_by_ios():
    mask, heatmap = _half_inside()
    verdicts = _rule(min_overlap=0.9, min_confidence=0.9).judge(Segmentation(mask, np.ones(1)), heatmap, ALL_VALID)
    assert verdicts.rejected_by.tolist() == ["ios"]


def test_rejected_pixels_become_ignore_unless_a_kept_mask_covers_them():
    label = np.zeros((2, 3), np.uint8)
    label[0, 0] = 1  # a kept mask's pixel
    kept = label == 1
    rejected = np.array([[1, 1, 0], [0, 0, 0]], bool)
    assert ignore_rejected(label, kept, rejected).tolist() == [[1, IGNORE_INDEX, 0], [0, 0, 0]]


def test_auto_confidence_is_ios_for_grabcut_and_a_sam_only_one_fails_naming_the_parameter():
    grabcut = GrabCutSegmenter(GRABCUT)
    assert MaskRule.from_params(SAM_LABELING, grabcut, T).confidence == "ios"
    with pytest.raises(ValueError, match=r"`sam_labeling.confidence` is 'stability_score'.*grabcut"):
        MaskRule.from_params({**SAM_LABELING, "min_confidence": 0.5, "confidence": "stability_score"}, grabcut, T)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("merge", "union", "sam_labeling.merge"),
    ("ios", {"min_overlap": 1.5}, "sam_labeling.ios.min_overlap"),
    ("ios", {"min_overlap": -0.1}, "sam_labeling.ios.min_overlap"),
    ("ios", {"min_overlapp": 0.5}, "did you mean `sam_labeling.ios.min_overlap`"),
    ("min_confidence", 2.0, "sam_labeling.min_confidence"),
    ("confidence", "entropy", "sam_labeling.confidence"),
])
def test_the_rule_applies_the_schemas_checks_when_called_outside_a_run(key, value, message):
    with pytest.raises(UserInputError, match=message):
        MaskRule.from_params({**SAM_LABELING, key: value}, GrabCutSegmenter(GRABCUT), T)
