import numpy as np
from toy_tiles import PROMPT_GENERATION, toy_tiles

from wsss_project.pipelines.evaluation.nodes import (
    cam_threshold_mask,
    decode_prediction,
    evaluate_cam_threshold,
    evaluate_pseudo_labels,
    flatten_for_mlflow,
)


def test_cam_threshold_is_strict_and_never_predicts_a_negative_class():
    cams = np.array([[[120, 121]], [[200, 200]]], np.uint8)  # 2 classes, 1x2 pixels
    assert cam_threshold_mask(cams, np.array([1, 0]), 120).tolist() == [[0, 1]]
    assert cam_threshold_mask(cams, np.array([1, 1]), 120).tolist() == [[2, 2]]


def test_perfect_pseudo_labels_score_one_and_ignore_counts_as_background():
    _, masks, cams, index = toy_tiles()
    perfect = evaluate_pseudo_labels(masks, masks, index, ["landslide"])
    assert perfect["iou"] == 1.0 and perfect["per_source"]["toy"]["iou"] == 1.0
    ignored = {k: np.where(v == 1, 255, v).astype(np.uint8) for k, v in masks.items()}
    assert evaluate_pseudo_labels(ignored, masks, index, ["landslide"])["recall"] == 0.0


def test_cam_threshold_stage_counts_negative_tiles_as_empty():
    _, masks, cams, index = toy_tiles()
    hot = {k: np.full_like(v, 255) for k, v in cams.items()}  # CAM fires everywhere
    result = evaluate_cam_threshold(hot, masks, index, PROMPT_GENERATION, ["landslide"])
    positive_pixels = sum(int(m.size) for t, m in masks.items() if index.set_index("tile_id").loc[t, "landslide"])
    assert result["tp"] + result["fp"] == positive_pixels


def test_binary_predictions_decode_from_0_255():
    assert decode_prediction(np.array([[0, 255]], np.uint8), 1).tolist() == [[0, 1]]


def test_mlflow_names_have_stage_and_source():
    flat = flatten_for_mlflow({"prediction": {"oa": 1, "precision": 1, "recall": 1, "f1": 1, "iou": 0.5, "miou": 0.7,
                                              "per_source": {"bijie": {"oa": 1, "precision": 1, "recall": 1, "f1": 1,
                                                                       "iou": 0.25, "miou": 0.6}}}})
    assert flat["prediction.iou"] == {"value": 0.5, "step": 0}
    assert flat["prediction.bijie.iou"]["value"] == 0.25
