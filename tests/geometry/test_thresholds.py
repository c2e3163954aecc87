import numpy as np
import pytest

from wsss_project.geometry.thresholds import (
    choose_threshold,
    heatmap_histogram,
    negative_quantile_threshold,
    otsu_threshold,
)


def test_negative_quantile_bounds_the_false_positive_share_on_negative_tiles():
    rng = np.random.default_rng(0)
    negatives = rng.integers(0, 256, 10_000).astype(np.uint8)
    hist = heatmap_histogram(negatives)
    for q in (0.5, 0.9, 0.99):
        t = negative_quantile_threshold(hist, q)
        assert (negatives > t).mean() <= 1 - q + 1e-12  # H > T fires on at most 1 - q of them
        assert (negatives > t - 1).mean() > 1 - q  # and T is the smallest such value


def test_otsu_splits_two_modes():
    values = np.r_[np.full(500, 40), np.full(300, 200)].astype(np.uint8)
    t = otsu_threshold(heatmap_histogram(values))
    assert 40 <= t < 200


def test_histogram_counts_valid_pixels_only():
    heat = np.array([[10, 20], [30, 255]], np.uint8)
    hist = heatmap_histogram(heat, np.array([[True, False], [True, False]]))
    assert hist.sum() == 2 and hist[10] == hist[30] == 1 and hist[255] == 0


def test_rules_without_evidence_or_unknown_fail_naming_what_to_fix():
    empty = np.zeros(256, np.int64)
    with pytest.raises(ValueError, match="negative train tiles"):
        choose_threshold(empty + 1, empty, "negative_quantile", 0.99, 128)
    with pytest.raises(ValueError, match="auto_threshold.rule"):
        choose_threshold(empty + 1, empty + 1, "median", 0.99, 128)
    with pytest.raises(ValueError, match="negative_quantile"):
        negative_quantile_threshold(empty + 1, 1.5)
    assert choose_threshold(empty, empty, "fixed", 0.99, 128) == 128
