"""Nodes of supervised_reference: segmentation_training's training node on the true tile masks.

Prediction reuses `segmentation_training.nodes.predict_scenes` unchanged, so the only difference
from the weakly supervised model is what it learns from.
"""

from __future__ import annotations

import pandas as pd

from wsss_project.pipelines.segmentation_training.nodes import train_segmentation_model
from wsss_project.tile_data import Partitions

HISTORY_PREFIX = "supervised_reference_training"


def train_supervised_reference(
    tiles: Partitions, tile_masks: Partitions, tile_index: pd.DataFrame,
    segmentation_training: dict, classes: list[str], seed: int, device: str,
) -> tuple[dict, pd.DataFrame, dict]:
    """Train ResUNet with the segmentation_training parameters and seed on the train tiles' true masks."""
    return train_segmentation_model(
        tiles, tile_masks, tile_index, segmentation_training, classes, seed, device,
        masks_dataset="tile_masks", history_prefix=HISTORY_PREFIX,
    )
