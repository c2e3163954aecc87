"""GrabCutSegmenter on a synthetic textured blob."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from wsss_project.segmenters.base import prompts_for_mode
from wsss_project.segmenters.grabcut import GrabCutSegmenter

TILE = 128
BLOB_CENTRE = (60, 70)  # x, y
BLOB_AXES = (30, 22)
BROWN = (140, 95, 55)
GREEN = (60, 120, 50)
TEXTURE_STD = 12
PARAMS = {
    "iterations": 5,
    "point_radius": 3,
    "point_neighbourhood_radius": 20,
    "cam_guided": False,
    "prior_threshold": 90,
}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    """A textured brown ellipse on green texture; returns (image RGB uint8, blob mask)."""
    rng = np.random.default_rng(0)
    blob = np.zeros((TILE, TILE), dtype=np.uint8)
    cv2.ellipse(blob, BLOB_CENTRE, BLOB_AXES, 20, 0, 360, 1, thickness=-1)
    blob = blob.astype(bool)
    image = np.where(blob[..., None], np.array(BROWN), np.array(GREEN)).astype(np.float64)
    image += rng.normal(0, TEXTURE_STD, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), blob


def _blob_prompt(blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    contours, _ = cv2.findContours(
        blob.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    moments = cv2.moments(contours[0])
    box = np.array([cv2.boundingRect(contours[0])], dtype=np.float64)
    point = np.array([[moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]]])
    return box, point


def test_point_box_recovers_blob_and_beats_the_box(scene):
    image, blob = scene
    segmenter = GrabCutSegmenter(PARAMS)
    boxes, points, kept = prompts_for_mode(*_blob_prompt(blob), "point_box")
    masks, scores = segmenter.segment(segmenter.embed(image), boxes, points)
    assert masks.shape == (1, TILE, TILE) and masks.dtype == bool
    assert scores.shape == (1,) and 0.5 < scores[0] <= 1.0
    box_mask = np.zeros_like(blob)
    x0, y0, x1, y1 = boxes[0].astype(int)
    box_mask[y0:y1, x0:x1] = True
    assert _iou(masks[0], blob) > 0.7
    assert _iou(masks[0], blob) > _iou(box_mask, blob)
    assert not masks[0][~box_mask].any()  # never foreground outside the box


def test_outside_every_box_is_background(scene):
    image, _ = scene
    segmenter = GrabCutSegmenter(PARAMS)
    boxes = np.array([[10, 10, 50, 40], [70, 60, 120, 110]], dtype=np.float64)
    points = np.array([[30, 25], [np.nan, np.nan]])
    masks, scores = segmenter.segment(segmenter.embed(image), boxes, points)
    assert masks.shape == (2, TILE, TILE) and scores.shape == (2,)
    inside = np.zeros((TILE, TILE), dtype=bool)
    for x0, y0, x1, y1 in boxes.astype(int):
        inside[y0:y1, x0:x1] = True
    assert not masks.any(axis=0)[~inside].any()
    assert masks[0, 25, 30]  # the point is definite foreground


def test_whole_tile_box_does_not_crash(scene):
    image, _ = scene
    segmenter = GrabCutSegmenter(PARAMS)
    boxes = np.array([[0, 0, TILE, TILE]], dtype=np.float64)
    masks, scores = segmenter.segment(segmenter.embed(image), boxes, np.array([[64, 64]]))
    assert masks.shape == (1, TILE, TILE)
    assert masks.all() and scores[0] == 0.0  # fallback: the initial mask, no colour evidence


def test_uniform_image_gives_a_mask_inside_the_box_scored_in_0_1():
    segmenter = GrabCutSegmenter(PARAMS)
    image = np.full((TILE, TILE, 3), 100, dtype=np.uint8)
    masks, scores = segmenter.segment(segmenter.embed(image), np.array([[20, 20, 60, 60]]), None)
    assert masks.shape == (1, TILE, TILE) and masks.dtype == bool
    outside = np.ones((TILE, TILE), bool)
    outside[20:60, 20:60] = False
    assert not masks[0][outside].any()
    assert 0.0 <= scores[0] <= 1.0 and (masks[0].any() or scores[0] == 0.0)  # an empty mask scores 0


def test_no_prompts_gives_empty_arrays(scene):
    image, _ = scene
    segmenter = GrabCutSegmenter(PARAMS)
    masks, scores = segmenter.segment(segmenter.embed(image), np.zeros((0, 4)), np.zeros((0, 2)))
    assert masks.shape == (0, TILE, TILE) and scores.shape == (0,)


def test_cam_guided_uses_the_prior(scene):
    image, blob = scene
    segmenter = GrabCutSegmenter({**PARAMS, "cam_guided": True})
    state = segmenter.embed(image)
    boxes, _, _ = prompts_for_mode(*_blob_prompt(blob), "box")
    good_prior = np.where(blob, 200, 20).astype(np.uint8)
    wrong_prior = np.where(blob, 20, 200).astype(np.uint8)  # hot on the green around the blob
    cold_prior = np.zeros((TILE, TILE), dtype=np.uint8)
    good, _ = segmenter.segment(state, boxes, None, prior=good_prior)
    wrong, _ = segmenter.segment(state, boxes, None, prior=wrong_prior)
    cold, cold_scores = segmenter.segment(state, boxes, None, prior=cold_prior)
    assert _iou(good[0], blob) > 0.7
    assert _iou(wrong[0], blob) < 0.3
    assert not cold.any() and cold_scores[0] == 0.0  # nothing above the threshold: no foreground
    with pytest.raises(ValueError, match="prior"):
        segmenter.segment(state, boxes, None)


def test_an_unset_prior_threshold_follows_t(scene):
    image, blob = scene
    following = GrabCutSegmenter({**PARAMS, "cam_guided": True, "prior_threshold": None})
    state = following.embed(image)
    boxes, _, _ = prompts_for_mode(*_blob_prompt(blob), "box")
    prior = np.where(blob, 200, 20).astype(np.uint8)
    with pytest.raises(ValueError, match="sam_labeling.grabcut.prior_threshold"):
        following.segment(state, boxes, None, prior=prior)  # no T given yet
    at_t, _ = following.at_threshold(PARAMS["prior_threshold"]).segment(state, boxes, None, prior=prior)
    fixed, _ = GrabCutSegmenter({**PARAMS, "cam_guided": True}).segment(state, boxes, None, prior=prior)
    np.testing.assert_array_equal(at_t, fixed)
    unguided = GrabCutSegmenter(PARAMS)
    assert unguided.at_threshold(150) is unguided  # the prior is not read: nothing to configure


def test_point_only_mode(scene):
    image, blob = scene
    segmenter = GrabCutSegmenter(PARAMS)
    boxes_xywh, point = _blob_prompt(blob)
    boxes_xywh = np.vstack([boxes_xywh, [[0, 0, 5, 5]]])
    points = np.vstack([point, [[np.nan, np.nan]]])
    boxes, points, kept = prompts_for_mode(boxes_xywh, points, "point")
    assert boxes is None and kept.tolist() == [0]
    masks, scores = segmenter.segment(segmenter.embed(image), None, points)
    assert masks.shape == (1, TILE, TILE)
    assert masks[0, int(point[0, 1]), int(point[0, 0])]


def test_missing_param_names_the_key():
    params = dict(PARAMS)
    del params["iterations"]
    with pytest.raises(KeyError, match="sam_labeling.grabcut.iterations"):
        GrabCutSegmenter(params)


def test_invalid_prompt_mode_names_the_parameter():
    with pytest.raises(ValueError, match="sam_labeling.prompt_mode"):
        prompts_for_mode(np.zeros((1, 4)), np.zeros((1, 2)), "mask")


def test_prompts_for_mode_converts_xywh():
    boxes, points, kept = prompts_for_mode(
        np.array([[1, 2, 3, 4], [5, 6, 7, 8]]), np.array([[2, 3], [np.nan, np.nan]]), "point_box"
    )
    assert boxes.tolist() == [[1, 2, 4, 6], [5, 6, 12, 14]]
    assert np.isnan(points[1]).all() and kept.tolist() == [0, 1]
    boxes, points, kept = prompts_for_mode(np.array([[1, 2, 3, 4]]), np.array([[2, 3]]), "box")
    assert points is None and boxes.shape == (1, 4) and kept.tolist() == [0]


def test_mask_does_not_depend_on_earlier_calls():
    """OpenCV's global RNG seeds GrabCut's k-means: the same prompts must give the same mask."""
    from wsss_project.imagery.synthetic import generate_scene
    from wsss_project.segmenters.grabcut import GrabCutSegmenter

    segmenter = GrabCutSegmenter(
        {"iterations": 5, "point_radius": 3, "point_neighbourhood_radius": 24, "cam_guided": False, "prior_threshold": None}
    )
    for seed in range(6):
        image, mask = generate_scene(seed, 256, 256, {})
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            continue
        boxes = np.array([[xs.min() - 5, ys.min() - 5, xs.max() + 5, ys.max() + 5]], float)
        points = np.array([[xs.mean(), ys.mean()]])
        state = segmenter.embed(image)
        first, _ = segmenter.segment(state, boxes, points)
        other = generate_scene(seed + 100, 256, 256, {})[0]
        segmenter.segment(segmenter.embed(other), boxes, points)  # advances OpenCV's RNG as other tiles would
        again, _ = segmenter.segment(state, boxes, points)
        np.testing.assert_array_equal(first, again)


def test_an_unknown_key_is_named_not_ignored():
    # A setting that silently does nothing is a bug: the schema's GrabCut model forbids it here too.
    with pytest.raises(ValueError, match=r"sam_labeling\.grabcut\.iteration`; did you mean `sam_labeling\.grabcut\.iterations"):
        GrabCutSegmenter({**PARAMS, "iteration": 3})
