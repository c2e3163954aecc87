"""Does a model trained on one sensor carry over to the other? The evidence behind
`data.folder.radiometry: stretch`, measured across the two sources of landslide_real.

    pytest tests/benchmarks/test_radiometry_transfer.py -m benchmark -s

A per-pixel logistic regression on RGB and its 9x9 local mean and standard deviation is trained
on the first 25 scenes of one source and scored (IoU, each pixel once) on the last 11 scenes of
the other source and of its own, for three radiometries: as read, the product's per-band stretch
(`stretch_to_uint8`), and one stretch range for all bands. The classifier is a probe of how far
apart the two sensors' pixels lie, not a product method.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
from sklearn.linear_model import LogisticRegression

from wsss_project.evaluation.metrics import ConfusionAccumulator
from wsss_project.imagery.readers import read_image, read_mask, stretch_to_uint8

SOURCES = ("bijie", "sichuan")
N_TRAIN_SCENES = 25
PIXELS_PER_SCENE = 4000
WINDOW = 9
PERCENTILES = (2.0, 98.0)
MAX_ITER = 500


def _one_range_for_all_bands(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, PERCENTILES)
    return np.clip((image.astype(np.float64) - low) * 255.0 / (high - low), 0, 255).round().astype(np.uint8)


def _per_band(image: np.ndarray) -> np.ndarray:
    return stretch_to_uint8(image, *PERCENTILES, stretch_uint8=True)


RADIOMETRIES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "as_read": lambda image: image,
    "stretch_per_band": _per_band,
    "stretch_one_range": _one_range_for_all_bands,
}


def _features(image: np.ndarray) -> np.ndarray:
    values = image.astype(np.float32) / 255.0
    mean = cv2.blur(values, (WINDOW, WINDOW))
    std = np.sqrt(np.maximum(cv2.blur(values * values, (WINDOW, WINDOW)) - mean * mean, 0))
    return np.concatenate([values, mean, std], axis=2).reshape(-1, 9)


def _scenes(real_data, source):
    for path in sorted((real_data / "images").glob(f"{source}_*.png")):
        image, _ = read_image(path)
        yield image, read_mask(real_data / "masks" / path.name, image.shape[:2], [255], None).reshape(-1)


def test_radiometry_transfer_between_sources(real_data):
    rng = np.random.default_rng(0)
    scenes = {source: list(_scenes(real_data, source)) for source in SOURCES}
    print()
    for name, radiometry in RADIOMETRIES.items():
        for train_source in SOURCES:
            x, y = [], []
            for image, mask in scenes[train_source][:N_TRAIN_SCENES]:
                pick = rng.choice(mask.size, PIXELS_PER_SCENE, replace=False)
                x.append(_features(radiometry(image))[pick])
                y.append(mask[pick])
            probe = LogisticRegression(max_iter=MAX_ITER, class_weight="balanced").fit(np.concatenate(x), np.concatenate(y))
            scores = {}
            for test_source in SOURCES:
                accumulator = ConfusionAccumulator(2)
                for image, mask in scenes[test_source][N_TRAIN_SCENES:]:
                    accumulator.update(probe.predict(_features(radiometry(image))).astype(np.uint8), mask)
                scores[test_source] = accumulator.metrics()["iou"]
            other = next(s for s in SOURCES if s != train_source)
            print(f"{name:<18} trained on {train_source:<8} -> {other:<8} IoU {scores[other]:.3f} "
                  f"(own source {scores[train_source]:.3f})", flush=True)
            assert 0.0 <= scores[other] <= 1.0
