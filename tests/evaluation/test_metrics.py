"""Confusion-matrix metrics against hand counts and scikit-learn."""

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score

from wsss_project.evaluation.metrics import ConfusionAccumulator, binary_mask_metrics

IGNORE = 255


def _hand_case():
    # target / pred, row-major; 255 = ignore
    target = np.array([[1, 1, 1, 0], [0, 0, 0, 0], [1, 0, IGNORE, IGNORE]], dtype=np.uint8)
    pred = np.array([[1, 1, 0, 1], [1, 0, 0, 0], [0, 0, 1, 1]], dtype=np.uint8)
    return pred, target


def test_binary_metrics_match_hand_counts():
    pred, target = _hand_case()
    # kept pixels: 10; tp = 2, fn = 2 (target 1 -> pred 0), fp = 2, tn = 4
    accumulator = ConfusionAccumulator(2)
    accumulator.update(pred, target)
    np.testing.assert_array_equal(accumulator.matrix, [[4, 2], [2, 2]])
    result = accumulator.metrics(class_names=["background", "landslide"])
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (2, 2, 2, 4)
    assert result["pixels"] == 10
    assert result["oa"] == pytest.approx(6 / 10)
    assert result["precision"] == pytest.approx(2 / 4)
    assert result["recall"] == pytest.approx(2 / 4)
    assert result["f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 2))
    assert result["iou"] == pytest.approx(2 / 6)
    assert result["miou_foreground"] == result["iou"]
    background_iou = 4 / (4 + 2 + 2)
    assert result["miou"] == pytest.approx((background_iou + 2 / 6) / 2)
    assert result["per_class"]["landslide"]["support"] == 4
    assert result["per_class"]["background"]["iou"] == pytest.approx(background_iou)


def test_ignore_pixels_are_excluded_whatever_is_predicted():
    pred, target = _hand_case()
    other = pred.copy()
    other[target == IGNORE] = 1 - other[target == IGNORE]
    assert binary_mask_metrics(pred, target) == binary_mask_metrics(other, target)


def test_metrics_are_json_ready():
    pred, target = _hand_case()
    metrics = binary_mask_metrics(pred, target)
    assert json.loads(json.dumps(metrics, allow_nan=False)) == metrics  # plain numbers, no NaN


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_matches_sklearn_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 2, size=(40, 50), dtype=np.uint8)
    pred = rng.integers(0, 2, size=(40, 50), dtype=np.uint8)
    target[rng.random(target.shape) < 0.1] = IGNORE
    keep = target != IGNORE
    y_true, y_pred = target[keep], pred[keep]
    result = binary_mask_metrics(pred, target)
    assert result["oa"] == pytest.approx(np.mean(y_true == y_pred))
    assert result["precision"] == pytest.approx(precision_score(y_true, y_pred))
    assert result["recall"] == pytest.approx(recall_score(y_true, y_pred))
    assert result["f1"] == pytest.approx(f1_score(y_true, y_pred))
    assert result["iou"] == pytest.approx(jaccard_score(y_true, y_pred))
    assert result["miou"] == pytest.approx(jaccard_score(y_true, y_pred, average="macro"))


@pytest.mark.parametrize("seed", [0, 1])
def test_multiclass_matches_sklearn_on_random_masks(seed):
    n_classes = 4
    rng = np.random.default_rng(seed)
    target = rng.integers(0, n_classes, size=(30, 30), dtype=np.uint8)
    pred = rng.integers(0, n_classes, size=(30, 30), dtype=np.uint8)
    target[rng.random(target.shape) < 0.1] = IGNORE
    keep = target != IGNORE
    y_true, y_pred = target[keep], pred[keep]
    foreground = list(range(1, n_classes))
    names = ["background", "building", "tree", "car"]

    accumulator = ConfusionAccumulator(n_classes)
    accumulator.update(pred, target)
    result = accumulator.metrics(class_names=names)

    per_class_iou = jaccard_score(y_true, y_pred, labels=list(range(n_classes)), average=None)
    per_class_f1 = f1_score(y_true, y_pred, labels=list(range(n_classes)), average=None)
    for index, name in enumerate(names):
        assert result["per_class"][name]["iou"] == pytest.approx(per_class_iou[index])
        assert result["per_class"][name]["f1"] == pytest.approx(per_class_f1[index])
    macro = {"labels": foreground, "average": "macro"}
    assert result["precision"] == pytest.approx(precision_score(y_true, y_pred, **macro))
    assert result["recall"] == pytest.approx(recall_score(y_true, y_pred, **macro))
    assert result["f1"] == pytest.approx(f1_score(y_true, y_pred, **macro))
    assert result["iou"] == pytest.approx(jaccard_score(y_true, y_pred, **macro))
    assert result["miou_foreground"] == result["iou"]
    assert result["miou"] == pytest.approx(per_class_iou.mean())
    assert result["oa"] == pytest.approx(np.mean(y_true == y_pred))
    assert "tp" not in result  # pixel counts of the binary case live in per_class here


def test_accumulating_updates_equals_one_update_of_the_concatenation():
    rng = np.random.default_rng(7)
    pairs = [
        (
            rng.integers(0, 3, size=(8, 12), dtype=np.uint8),
            rng.choice(np.array([0, 1, 2, IGNORE], dtype=np.uint8), size=(8, 12)),
        )
        for _ in range(5)
    ]
    piecewise = ConfusionAccumulator(3)
    for pred, target in pairs:
        piecewise.update(pred, target)
    whole = ConfusionAccumulator(3)
    whole.update(np.concatenate([p for p, _ in pairs]), np.concatenate([t for _, t in pairs]))
    np.testing.assert_array_equal(piecewise.matrix, whole.matrix)
    assert piecewise.metrics() == whole.metrics()

    merged = ConfusionAccumulator(3)
    for pred, target in pairs:
        part = ConfusionAccumulator(3)
        part.update(pred, target)
        merged.merge(part)
    np.testing.assert_array_equal(merged.matrix, whole.matrix)


def test_shape_mismatch_names_both_shapes():
    accumulator = ConfusionAccumulator(2)
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)"):
        accumulator.update(np.zeros((4, 5), np.uint8), np.zeros((5, 4), np.uint8))


def test_out_of_range_class_index_is_rejected():
    accumulator = ConfusionAccumulator(2)
    with pytest.raises(ValueError, match="pred"):
        accumulator.update(np.full((2, 2), 3, np.uint8), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="target"):
        accumulator.update(np.zeros((2, 2), np.uint8), np.full((2, 2), 2, np.uint8))


def test_zero_denominators_give_zero_with_counts():
    accumulator = ConfusionAccumulator(2)
    empty = accumulator.metrics()
    assert empty["pixels"] == 0
    assert all(empty[key] == 0.0 for key in ("oa", "precision", "recall", "f1", "iou", "miou"))

    background_only = np.zeros((3, 3), np.uint8)
    accumulator.update(background_only, background_only)
    result = accumulator.metrics()
    assert result["oa"] == 1.0
    assert (result["precision"], result["recall"], result["iou"]) == (0.0, 0.0, 0.0)
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (0, 0, 0, 9)


def test_binary_mask_metrics_accepts_0_255_and_bool_predictions():
    pred, target = _hand_case()
    expected = binary_mask_metrics(pred, target)
    assert binary_mask_metrics(pred * 255, target) == expected
    assert binary_mask_metrics(pred.astype(bool), target) == expected


def test_wrong_number_of_class_names_is_rejected():
    with pytest.raises(ValueError, match="class names"):
        ConfusionAccumulator(3).metrics(class_names=["background", "landslide"])
