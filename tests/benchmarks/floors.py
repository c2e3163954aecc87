"""Floors for every quality figure on real scenes: one-line colour rules and "everything landslide".

The product never contains such a rule (its features are learned from tile labels); they are
printed beside each figure so a reader sees what a trivial method scores on the same pixels.
Each scene pixel counts once (whole scenes at their original size).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from wsss_project.evaluation.metrics import ConfusionAccumulator
from wsss_project.imagery.readers import read_image, read_mask

# Thresholds as CALIBRATION.md reported them (R > G, R > G + 10, mean brightness > 120).
RED_MARGIN = 10
BRIGHTNESS = 120
COLOUR_RULES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "floor_r_gt_g": lambda im: im[..., 0].astype(np.int16) > im[..., 1],
    "floor_r_gt_g_plus_10": lambda im: im[..., 0].astype(np.int16) > im[..., 1].astype(np.int16) + RED_MARGIN,
    "floor_brightness_gt_120": lambda im: im.astype(np.float32).mean(axis=2) > BRIGHTNESS,
    "floor_all_landslide": lambda im: np.ones(im.shape[:2], bool),
}


def colour_floors(real_data: Path, scenes: pd.DataFrame, split: str) -> dict[str, dict[str, float]]:
    """IoU of each rule over the scenes of `split`, pooled and per source: {rule: {scope: iou}}."""
    accumulators: dict[tuple[str, str], ConfusionAccumulator] = {}
    for scene in scenes[scenes["split"] == split].itertuples(index=False):
        image, _ = read_image(real_data / "images" / f"{scene.scene_id}.png")
        target = read_mask(real_data / "masks" / f"{scene.scene_id}.png", image.shape[:2], [255], None)
        for rule, predict in COLOUR_RULES.items():
            pred = predict(image).astype(np.uint8)
            for scope in ("pooled", scene.source):
                accumulators.setdefault((rule, scope), ConfusionAccumulator(2)).update(pred, target)
    out: dict[str, dict[str, float]] = {}
    for (rule, scope), acc in accumulators.items():
        out.setdefault(rule, {})[scope] = acc.metrics()["iou"]
    return out
