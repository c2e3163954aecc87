"""The stored probability rasters' decision is exactly the model's float argmax."""

from __future__ import annotations

import numpy as np

from wsss_project.pipelines.segmentation_training.nodes import encode_prediction
from wsss_project.prediction_rasters import (
    BINARY_DECISION_LEVEL,
    classes_from_probabilities,
    probability_band_names,
    quantise_probabilities,
)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=0))
    return (e / e.sum(axis=0)).astype(np.float32)


def test_binary_rasters_hold_the_foreground_probability_and_threshold_to_the_prediction():
    rng = np.random.default_rng(0)
    # Many probabilities within half a level of 0.5, where plain rounding would disagree with the argmax.
    p1 = np.concatenate([rng.random(5000), 0.5 + rng.uniform(-2e-3, 2e-3, 5000), [0.5, 0.0, 1.0]]).astype(np.float32)
    probs = np.stack([1 - p1, p1])[:, None, :]
    assert ((np.rint(p1 * 255) >= BINARY_DECISION_LEVEL) != (p1 > 1 - p1)).any(), "the case needs rounding errors"
    bands = quantise_probabilities(probs)
    assert bands.shape == (1, 1, p1.size) and bands.dtype == np.uint8
    predicted = probs.argmax(axis=0)
    np.testing.assert_array_equal(classes_from_probabilities(bands, 1), predicted)
    assert np.abs(bands[0].astype(int) - np.rint(p1 * 255)).max() <= 1, "at most one level from round(255 p)"
    assert (bands[0][predicted == 1] >= BINARY_DECISION_LEVEL).all()


def test_multi_class_rasters_have_one_band_per_class_whose_argmax_is_the_prediction():
    rng = np.random.default_rng(1)
    probs = _softmax(rng.normal(size=(4, 64, 64)) * 3)
    probs[:, 0, :4] = np.float32([0.3, 0.3, 0.3, 0.1])[:, None]  # exact ties: the first class wins, as argmax
    probs[:, 1, :4] = np.float32([0.099, 0.450, 0.451, 0.0])[:, None]  # both round to 115: the later one wins
    assert (np.rint(probs * 255).argmax(axis=0) != probs.argmax(axis=0)).any(), "the case needs a rounding tie"
    bands = quantise_probabilities(probs)
    assert bands.shape == (4, 64, 64)
    np.testing.assert_array_equal(classes_from_probabilities(bands, 3), probs.argmax(axis=0))
    assert np.abs(bands.astype(int) - np.rint(probs * 255)).max() <= 1


def test_band_names_and_the_stored_prediction():
    assert probability_band_names(["landslide"]) == ("landslide",)
    assert probability_band_names(["a", "b"]) == ("background", "a", "b")
    assert encode_prediction(classes_from_probabilities(np.array([[127, 128]], np.uint8), 1), 1).tolist() == [[0, 255]]
