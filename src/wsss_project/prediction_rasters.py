"""The stored forms of the model output per test scene (`prediction_probabilities`, `predictions`),
owned here: which bands a probability raster holds, how softmax probabilities become uint8, and
how the class index is read back from them.

- `prediction_probabilities`: uint8 0..255 = round(255 p). Binary task: one band, the foreground
  class's probability (background is its complement). Multi-class: one band per class of the model,
  background first, then `classes` in order. Band descriptions name the classes.
- Decision-consistent quantisation: where rounding would make the stored bands disagree with the
  float argmax the model predicted (p within half a level of the decision boundary), the predicted
  class's value moves by one level, so the stored raster's decision is exactly the prediction:
  binary, landslide where the band is >= 128 (:data:`BINARY_DECISION_LEVEL`); multi-class, the
  band argmax (first band on ties). `predictions` are derived from the stored probabilities by that
  rule (segmentation_training.nodes.classify_scenes), so both rasters always agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wsss_project.contracts import BACKGROUND_NAME, PROBABILITY_MAX

BINARY_DECISION_LEVEL = 128  # stored binary probability >= this <=> landslide (p > 0.5 <=> round(255 p) >= 128)


def probability_band_names(classes: Sequence[str]) -> tuple[str, ...]:
    """The bands of a probability raster: the class for a binary task, else background + classes."""
    return (classes[0],) if len(classes) == 1 else (BACKGROUND_NAME, *classes)


def quantise_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """(n_outputs, h, w) softmax probabilities -> the stored uint8 bands, decision-consistent (see module doc).

    n_outputs = 2 (background, foreground) gives one band; more give one band per output.
    """
    probabilities = np.asarray(probabilities)
    predicted = probabilities.argmax(axis=0)
    levels = np.clip(np.rint(probabilities * PROBABILITY_MAX), 0, PROBABILITY_MAX).astype(np.uint8)
    if probabilities.shape[0] == 2:
        foreground = levels[1]
        upper = BINARY_DECISION_LEVEL - 1
        return np.where(predicted == 1, np.maximum(foreground, BINARY_DECISION_LEVEL),
                        np.minimum(foreground, upper)).astype(np.uint8)[None]
    stored = levels.argmax(axis=0)
    # Rounding is monotone, so a disagreement is a tie with an earlier band: lift the predicted one a level
    # (never past 255: two softmax outputs cannot both round to 255).
    rows, cols = np.nonzero(stored != predicted)
    winner = predicted[rows, cols]
    levels[winner, rows, cols] = levels[stored[rows, cols], rows, cols] + 1
    return levels


def classes_from_probabilities(bands: np.ndarray, n_classes: int) -> np.ndarray:
    """Class index (h, w) uint8 from stored probability bands ((1 | n_classes + 1, h, w), or (h, w) for one)."""
    bands = np.asarray(bands)
    if n_classes == 1:
        single = bands if bands.ndim == 2 else bands[0]
        return (single >= BINARY_DECISION_LEVEL).astype(np.uint8)
    return bands.argmax(axis=0).astype(np.uint8)


def class_probability_bands(bands: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, h, w): each class's stored probability, from stored bands ((1 | n_classes + 1, h, w), or
    (h, w) for one band): the background band of a multi-class raster is dropped."""
    bands = np.asarray(bands)
    if n_classes == 1:
        return bands[None] if bands.ndim == 2 else bands
    return bands[1:]
