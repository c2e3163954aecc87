"""SamSegmenter on a tiny random-weight SAM built from segment_anything's own modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything.modeling import Sam
from tiny_sam import EMBED_DIM, IMG_SIZE, PATCH, build_tiny_sam

from wsss_project.segmenters.base import prompts_for_mode
from wsss_project.segmenters.cache import EmbeddingCache
from wsss_project.segmenters.factory import build_segmenter
from wsss_project.segmenters.sam import SamSegmenter
from wsss_project.utils.fingerprint import checkpoint_fingerprint

TILE = 96  # tiles are resized up to IMG_SIZE, as 256-px tiles are to 1024 in the real model
SAM_PARAMS = {"multimask_output": True, "stability_score_offset": 1.0}
DEVICE = torch.device("cpu")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny_sam") / "tiny_sam.pth"
    torch.save(build_tiny_sam().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def segmenter(checkpoint) -> SamSegmenter:
    model = build_tiny_sam(seed=1)  # different init: the weights must come from the file
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return SamSegmenter(model, DEVICE, SAM_PARAMS)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (TILE, TILE, 3), dtype=np.uint8)


BOXES_XYWH = np.array([[5, 5, 30, 20], [40, 40, 50, 50], [0, 60, 20, 30]], dtype=np.float64)
POINTS = np.array([[20, 15], [65, 65], [np.nan, np.nan]])


def test_embed_state(segmenter, image):
    state = segmenter.embed(image)
    grid = IMG_SIZE // PATCH
    assert state.arrays["embedding"].shape == (1, EMBED_DIM, grid, grid)
    assert state.arrays["embedding"].dtype == np.float32
    assert state.arrays["original_size"].tolist() == [TILE, TILE]
    assert state.arrays["input_size"].tolist() == [IMG_SIZE, IMG_SIZE]
    assert state.image_shape == (TILE, TILE, 3)


def test_embedding_matches_sam_predictor(segmenter, image):
    from segment_anything import SamPredictor

    predictor = SamPredictor(segmenter.model)
    predictor.set_image(image)
    expected = predictor.get_image_embedding().numpy()
    np.testing.assert_allclose(segmenter.embed(image).arrays["embedding"], expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["point_box", "box", "point"])
def test_one_batched_call_returns_k_masks(segmenter, image, mode, monkeypatch):
    state = segmenter.embed(image)
    boxes, points, kept = prompts_for_mode(BOXES_XYWH, POINTS, mode)
    calls = []
    original = segmenter.predictor.predict_torch
    monkeypatch.setattr(
        segmenter.predictor,
        "predict_torch",
        lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs),
    )
    masks, scores = segmenter.segment(state, boxes, points)
    expected_k = 2 if mode == "point" else 3
    assert len(kept) == expected_k
    assert masks.shape == (expected_k, TILE, TILE) and masks.dtype == bool
    assert scores.shape == (expected_k,) and scores.dtype == np.float32
    assert len(calls) == 1


def test_matches_sam_predictor_per_prompt(segmenter, image):
    """The batched call equals SamPredictor.predict on each prompt (best of 3 by IoU)."""
    from segment_anything import SamPredictor

    predictor = SamPredictor(segmenter.model)
    predictor.set_image(image)
    boxes, points, _ = prompts_for_mode(BOXES_XYWH[:2], POINTS[:2], "point_box")
    masks, scores = segmenter.segment(segmenter.embed(image), boxes, points)
    for k in range(2):
        ref_masks, ref_scores, _ = predictor.predict(
            point_coords=points[k : k + 1], point_labels=np.array([1]), box=boxes[k]
        )
        best = int(np.argmax(ref_scores))
        assert np.isclose(scores[k], ref_scores[best], atol=1e-5)
        assert (masks[k] != ref_masks[best]).mean() < 1e-3


def test_nan_point_uses_not_a_point_padding(segmenter, image):
    """A NaN point in point_box mode behaves like SAM's own padding point (label -1)."""
    from segment_anything import SamPredictor

    predictor = SamPredictor(segmenter.model)
    predictor.set_image(image)
    boxes, points, _ = prompts_for_mode(BOXES_XYWH, POINTS, "point_box")
    masks, scores = segmenter.segment(segmenter.embed(image), boxes, points)
    ref_masks, ref_scores, _ = predictor.predict(
        point_coords=np.zeros((1, 2)), point_labels=np.array([-1]), box=boxes[2]
    )
    best = int(np.argmax(ref_scores))
    assert np.isclose(scores[2], ref_scores[best], atol=1e-5)
    assert (masks[2] != ref_masks[best]).mean() < 1e-3


def test_cached_state_gives_the_same_masks(segmenter, image, checkpoint, tmp_path):
    cache = EmbeddingCache(tmp_path, checkpoint_fingerprint(checkpoint, "tiny"))
    boxes, points, _ = prompts_for_mode(BOXES_XYWH, POINTS, "point_box")
    fresh = segmenter.segment(segmenter.embed(image), boxes, points)
    cache.get_or_compute(image, segmenter.embed)
    cached_state = cache.get_or_compute(image, segmenter.embed)
    assert (cache.hits, cache.misses) == (1, 1)
    cached = segmenter.segment(cached_state, boxes, points)
    np.testing.assert_array_equal(cached[0], fresh[0])
    np.testing.assert_array_equal(cached[1], fresh[1])


def test_no_prompts(segmenter, image):
    masks, scores = segmenter.segment(segmenter.embed(image), np.zeros((0, 4)), None)
    assert masks.shape == (0, TILE, TILE) and scores.shape == (0,)


def test_point_mode_rejects_nan_points(segmenter, image):
    with pytest.raises(ValueError, match="NaN"):
        segmenter.segment(segmenter.embed(image), None, POINTS)


def test_missing_param_names_the_key():
    with pytest.raises(KeyError, match="sam_labeling.sam.multimask_output"):
        SamSegmenter(build_tiny_sam(), DEVICE, {})


# --------------------------------------------------------------------------- multimask_output


@pytest.fixture(scope="module")
def auto_segmenter(segmenter) -> SamSegmenter:
    return SamSegmenter(segmenter.model, DEVICE, {"multimask_output": "auto", "stability_score_offset": 1.0})


def _direct_predict_torch(model: Sam, image: np.ndarray, boxes, points, multimask: bool):
    """segment_anything's own batched call on the same prompts: (mask logits, IoU predictions)."""
    from segment_anything import SamPredictor

    predictor = SamPredictor(model)
    predictor.set_image(image)
    transform, size = predictor.transform, predictor.original_size
    coords = labels = boxes_torch = None
    if points is not None:
        has_point = ~np.isnan(points).any(axis=1)
        xy = torch.as_tensor(np.where(has_point[:, None], points, 0.0), dtype=torch.float)
        coords = transform.apply_coords_torch(xy, size)[:, None, :]
        labels = torch.as_tensor(np.where(has_point, 1, -1), dtype=torch.int)[:, None]
    if boxes is not None:
        boxes_torch = transform.apply_boxes_torch(torch.as_tensor(boxes, dtype=torch.float), size)
    with torch.inference_mode():
        logits, iou, _ = predictor.predict_torch(
            coords, labels, boxes_torch, multimask_output=multimask, return_logits=True
        )
    return logits, iou


def _best_of_three(logits: torch.Tensor, iou: torch.Tensor, threshold: float):
    best = iou.argmax(dim=1)
    rows = torch.arange(len(best))
    return (logits[rows, best] > threshold).numpy(), iou[rows, best].numpy()


@pytest.mark.parametrize("mode", ["point_box", "box"])
def test_auto_takes_sams_single_mask_for_box_prompts(auto_segmenter, image, mode):
    """Box prompts are unambiguous: auto returns mask token 0 of multimask_output=False."""
    model = auto_segmenter.model
    boxes, points, _ = prompts_for_mode(BOXES_XYWH, POINTS, mode)
    masks, scores = auto_segmenter.segment(auto_segmenter.embed(image), boxes, points)

    single_logits, single_iou = _direct_predict_torch(model, image, boxes, points, False)
    assert single_logits.shape[1] == 1  # SAM's single-mask head: one mask per prompt
    np.testing.assert_array_equal(masks, (single_logits[:, 0] > model.mask_threshold).numpy())
    np.testing.assert_allclose(scores, single_iou[:, 0].numpy(), atol=1e-6)

    multi_masks, multi_scores = _best_of_three(
        *_direct_predict_torch(model, image, boxes, points, True), model.mask_threshold
    )
    # Not the best of three: the other head's IoU and masks (would pass if auto meant true).
    assert not np.allclose(scores, multi_scores, atol=1e-4)
    assert (masks != multi_masks).any()


def test_auto_keeps_best_of_three_for_point_only_prompts(auto_segmenter, image):
    model = auto_segmenter.model
    boxes, points, _ = prompts_for_mode(BOXES_XYWH, POINTS, "point")
    assert boxes is None
    masks, scores = auto_segmenter.segment(auto_segmenter.embed(image), boxes, points)
    logits, iou = _direct_predict_torch(model, image, boxes, points, True)
    assert logits.shape[1] == 3
    ref_masks, ref_scores = _best_of_three(logits, iou, model.mask_threshold)
    np.testing.assert_array_equal(masks, ref_masks)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-6)


def test_false_takes_single_mask_even_for_points(segmenter, image):
    model = segmenter.model
    single = SamSegmenter(model, DEVICE, {"multimask_output": False, "stability_score_offset": 1.0})
    boxes, points, _ = prompts_for_mode(BOXES_XYWH, POINTS, "point")
    masks, scores = single.segment(single.embed(image), boxes, points)
    logits, iou = _direct_predict_torch(model, image, boxes, points, False)
    np.testing.assert_array_equal(masks, (logits[:, 0] > model.mask_threshold).numpy())
    np.testing.assert_allclose(scores, iou[:, 0].numpy(), atol=1e-6)


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("auto", None), (True, True), (False, False), ("true", True), ("False", False)],
)
def test_multimask_settings(setting, expected):
    assert (
        SamSegmenter(build_tiny_sam(), DEVICE, {"multimask_output": setting, "stability_score_offset": 1.0}).multimask_output
        is expected
    )


@pytest.mark.parametrize("setting", ["maybe", 1, None, "best"])
def test_invalid_multimask_names_the_key(setting):
    with pytest.raises(ValueError, match="sam_labeling.sam.multimask_output"):
        SamSegmenter(build_tiny_sam(), DEVICE, {"multimask_output": setting, "stability_score_offset": 1.0})


def test_factory_rejects_invalid_multimask_before_loading(tmp_path):
    """A bad setting fails before the checkpoint is even looked for."""
    params = {
        "segmenter": "sam",
        "sam": {
            "checkpoint": str(tmp_path / "absent.pth"),
            "model_type": "vit_b",
            "multimask_output": "maybe",
            "stability_score_offset": 1.0,
        },
        "grabcut": {},
    }
    with pytest.raises(ValueError, match="sam_labeling.sam.multimask_output"):
        build_segmenter(params, "cpu")


def test_project_default_is_auto():
    import yaml

    conf = Path(__file__).parents[2] / "conf" / "base" / "parameters_sam_labeling.yml"
    assert yaml.safe_load(conf.read_text())["sam_labeling"]["sam"]["multimask_output"] == "auto"


# --------------------------------------------------------------------------- confidences


@pytest.mark.parametrize("mode", ["point_box", "point"])
def test_confidences_are_the_predictors_iou_and_the_stability_of_the_returned_masks_logits(auto_segmenter, image, mode):
    """Predicted IoU and stability score of the very mask returned, from SAM's own outputs."""
    model = auto_segmenter.model
    boxes, points, _ = prompts_for_mode(BOXES_XYWH, POINTS, mode)
    result = auto_segmenter.segment_scored(auto_segmenter.embed(image), boxes, points)
    logits, iou = _direct_predict_torch(model, image, boxes, points, auto_segmenter.uses_multimask(boxes is not None))
    best = iou.argmax(dim=1)
    chosen = logits[torch.arange(len(best)), best].numpy()
    np.testing.assert_array_equal(result.masks, chosen > model.mask_threshold)
    np.testing.assert_allclose(result.confidences["predicted_iou"], iou.max(dim=1).values.numpy(), atol=1e-6)
    np.testing.assert_array_equal(result.scores, result.confidences["predicted_iou"])
    # Stability by hand: IoU of the mask cut one offset above and one below the mask threshold.
    high = (chosen > model.mask_threshold + 1.0).sum(axis=(1, 2))
    low = (chosen > model.mask_threshold - 1.0).sum(axis=(1, 2))
    expected = np.where(low > 0, high / np.maximum(low, 1), 0.0)
    np.testing.assert_allclose(result.confidences["stability_score"], expected, atol=1e-6)
    assert (high < low).any(), "the random SAM's masks are all perfectly stable: the test cannot tell offsets apart"
    # segment() answers with the same masks and scores
    masks, scores = auto_segmenter.segment(auto_segmenter.embed(image), boxes, points)
    np.testing.assert_array_equal(masks, result.masks)
    np.testing.assert_array_equal(scores, result.scores)


def test_the_stability_offset_is_the_parameters(segmenter, image):
    boxes, points, _ = prompts_for_mode(BOXES_XYWH, POINTS, "point_box")
    state = segmenter.embed(image)
    narrow = SamSegmenter(segmenter.model, DEVICE, {**SAM_PARAMS, "stability_score_offset": 0.01})
    wide = SamSegmenter(segmenter.model, DEVICE, {**SAM_PARAMS, "stability_score_offset": 5.0})
    narrow_scores = narrow.segment_scored(state, boxes, points).confidences["stability_score"]
    wide_scores = wide.segment_scored(state, boxes, points).confidences["stability_score"]
    assert (narrow_scores >= wide_scores).all() and (narrow_scores > wide_scores).any()


def test_missing_stability_offset_names_the_key():
    with pytest.raises(KeyError, match="sam_labeling.sam.stability_score_offset"):
        SamSegmenter(build_tiny_sam(), DEVICE, {"multimask_output": True})
