"""Image-level labels from masks, and the seeded scene split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from wsss_project.contracts import IGNORE_INDEX, TEST_SPLIT, TRAIN_SPLIT


def image_level_labels(
    mask_tile: np.ndarray, n_classes: int, min_fraction: float, valid: np.ndarray | None = None
) -> np.ndarray:
    """0/1 label per foreground class: 1 when the class covers >= min_fraction of the valid pixels.

    Valid pixels are those not equal to IGNORE_INDEX (and inside `valid`, when given), so border
    padding does not dilute the fraction.
    """
    keep = mask_tile != IGNORE_INDEX
    if valid is not None:
        keep &= valid
    n_valid = int(keep.sum())
    labels = np.zeros(n_classes, dtype=np.uint8)
    if n_valid == 0:
        return labels
    counts = np.bincount(mask_tile[keep].ravel(), minlength=n_classes + 1)
    labels[:] = (counts[1 : n_classes + 1] / n_valid) >= min_fraction
    return labels


def split_scenes(scenes: pd.DataFrame, test_fraction: float, seed: int) -> dict[str, str]:
    """Assign each scene to train or test, seeded and stratified by `source`.

    Each source keeps round(test_fraction * n) scenes for test, at least one when it has two or
    more scenes, so every source is measured on unseen scenes.
    """
    # Imported here: the schema imports imagery modules. Its rule for `data.split.test_fraction`.
    from wsss_project.validation.schema import check_section

    check_section({"test_fraction": test_fraction}, "data.split", partial=True)
    rng = np.random.default_rng(seed)
    split: dict[str, str] = {}
    for _, group in scenes.sort_values("scene_id").groupby("source", sort=True):
        ids = group["scene_id"].tolist()
        n_test = int(round(test_fraction * len(ids)))
        if len(ids) >= 2:
            n_test = min(max(n_test, 1), len(ids) - 1)
        else:
            n_test = 0
        test_ids = set(rng.permutation(ids)[:n_test].tolist())
        split.update({sid: (TEST_SPLIT if sid in test_ids else TRAIN_SPLIT) for sid in ids})
    return split
