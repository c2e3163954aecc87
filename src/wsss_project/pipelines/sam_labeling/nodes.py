"""Nodes of sam_labeling: prompts -> promptable segmenter -> one pseudo-mask per tile.

Pseudo-mask values: 0 = background, k = class k, 255 = ignore. A tile labelled negative for
every class is all background (the image-level label says so). A class that is positive but got
no prompt (its CAM never exceeds T) makes the whole tile 255 — we know it is there but not where,
so the segmentation model must not learn "background" from it. `unprompted_positive: background`
switches that off. Pixels outside the scene (the reflected padding of border tiles, past the tile's
valid `height` and `width`) are always 255: padding is not supervision.

Masks are produced lazily: each is computed when Kedro saves it, so one tile (and one
embedding) is in memory at a time whatever the tile count.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from wsss_project.errors import UserInputError
from wsss_project.imagery.labels import IGNORE_INDEX
from wsss_project.imagery.tiling import TileWindow, mark_outside_scene
from wsss_project.segmenters.base import ImageState, PromptableSegmenter, prompts_for_mode
from wsss_project.segmenters.cache import EmbeddingCache, checkpoint_fingerprint
from wsss_project.segmenters.factory import build_segmenter
from wsss_project.tile_data import (
    Partitions,
    cam_key,
    load_partition,
    positive_class_ids,
    tile_rows,
    tiles_of_split,
)

logger = logging.getLogger(__name__)

UNPROMPTED_POLICIES = ("ignore", "background")


def resolve_segmenter_params(sam_labeling: dict, threshold: int) -> dict:
    """The segmenter parameters with GrabCut's CAM prior threshold following T when unset."""
    grabcut = dict(sam_labeling["grabcut"])
    if grabcut.get("prior_threshold") is None:
        grabcut["prior_threshold"] = threshold
    return {**sam_labeling, "grabcut": grabcut}


def merge_class_masks(
    height: int, width: int, class_results: list[tuple[int, np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Unite each class's prompt masks; where classes overlap, the higher-scoring class wins.

    class_results: (class_id, masks bool (K,H,W), scores (K,)) per class.
    """
    label = np.zeros((height, width), dtype=np.uint8)
    best = np.full((height, width), -np.inf, dtype=np.float32)
    for class_id, masks, scores in class_results:
        for mask, score in zip(masks, scores, strict=True):
            wins = mask & (score > best)
            label[wins] = class_id
            best[wins] = score
    return label


class TileLabeler:
    """Labels one tile at a time with a segmenter, reusing cached image embeddings."""

    def __init__(
        self, segmenter: PromptableSegmenter, prompts: pd.DataFrame, prompt_mode: str,
        unprompted: str, cache: EmbeddingCache | None,
    ) -> None:
        if unprompted not in UNPROMPTED_POLICIES:
            raise UserInputError(f"parameter `sam_labeling.unprompted_positive` must be one of {list(UNPROMPTED_POLICIES)}")
        self.segmenter, self.prompt_mode, self.unprompted, self.cache = segmenter, prompt_mode, unprompted, cache
        self.by_tile = {key: group for key, group in prompts.groupby(["tile_id", "class_id"], sort=False)}
        self.done, self.started = 0, time.perf_counter()

    def _state(self, image: np.ndarray) -> ImageState:
        if self.cache is None:
            return self.segmenter.embed(image)
        return self.cache.get_or_compute(image, self.segmenter.embed)

    def label(
        self, tile_id: str, image: np.ndarray, positive: list[tuple[int, np.ndarray]], total: int,
        valid_size: tuple[int, int],
    ) -> np.ndarray:
        """Pseudo-mask of one tile; positive = (class_id, CAM heatmap) of its positive classes.

        valid_size: the tile's (height, width) inside its scene (tile_index row); the rest is 255.
        """
        height, width = image.shape[:2]
        results, unprompted, state = [], False, None
        for class_id, heatmap in positive:
            group = self.by_tile.get((tile_id, class_id))
            if group is None:
                unprompted = True
                continue
            boxes, points, _ = prompts_for_mode(
                group[["x0", "y0", "w", "h"]].to_numpy(), group[["px", "py"]].to_numpy(), self.prompt_mode
            )
            if boxes is None and (points is None or len(points) == 0):
                unprompted = True  # point mode and every centroid missing
                continue
            state = state or self._state(image)
            masks, scores = self.segmenter.segment(state, boxes, points, prior=heatmap)
            results.append((class_id, masks, scores))
        mask = merge_class_masks(height, width, results)
        if unprompted and self.unprompted == "ignore":
            mask[:] = IGNORE_INDEX
        self._progress(total)
        return mark_outside_scene(mask, TileWindow(0, 0, *valid_size), IGNORE_INDEX)

    def _progress(self, total: int) -> None:
        self.done += 1
        if self.done % 50 == 0 or self.done == total:
            rate = self.done / max(time.perf_counter() - self.started, 1e-9)
            cache = f", cache {self.cache.hits} hits / {self.cache.misses} misses" if self.cache else ""
            logger.info("Labelled %d/%d tiles (%.1f tiles/s%s)", self.done, total, rate, cache)

    def for_tile(self, tile_id: str, tiles: Partitions, cams: Partitions, classes: list[str],
                 positive_ids: list[int], total: int, valid_size: tuple[int, int]) -> Callable[[], np.ndarray]:
        """A loader that labels `tile_id` when called (lazy partition)."""

        def compute() -> np.ndarray:
            image = load_partition(tiles, tile_id, "tiles")
            positive = [(k, load_partition(cams, cam_key(classes[k - 1], tile_id), "cams")) for k in positive_ids]
            return self.label(tile_id, image, positive, total, valid_size)

        return compute


_SEGMENTERS: dict[str, PromptableSegmenter] = {}


def _model_key(params: dict, device: str) -> str:
    """What identifies the model: SAM's checkpoint file (content stamp), or GrabCut's settings."""
    sam = params.get("sam") or {}
    uses_sam = params["segmenter"] == "sam" or (params["segmenter"] == "auto" and sam.get("checkpoint"))
    if not uses_sam:
        return json.dumps({"grabcut": params["grabcut"]}, sort_keys=True, default=str)
    stamp = None
    if sam.get("checkpoint") and Path(sam["checkpoint"]).is_file():
        stat = Path(sam["checkpoint"]).stat()
        stamp = (stat.st_size, stat.st_mtime_ns)
    return json.dumps({"sam": sam, "stamp": stamp, "device": str(device)}, sort_keys=True, default=str)


def shared_segmenter(params: dict, device: str) -> PromptableSegmenter:
    """The segmenter for these parameters, built once per process.

    Every threshold and prompt-mode namespace labels with the same model: loading a SAM checkpoint
    costs seconds, decoding a tile's prompts from a cached embedding a fraction of one. A changed
    checkpoint file (size or modification time) builds a new one.
    """
    key = _model_key(params, device)
    if key not in _SEGMENTERS:
        _SEGMENTERS.clear()  # one model in memory at a time
        _SEGMENTERS[key] = build_segmenter(params, device)
    return _SEGMENTERS[key]


def build_embedding_cache(sam_labeling: dict, segmenter: PromptableSegmenter) -> EmbeddingCache | None:
    """A persisted embedding cache for SAM (keyed by checkpoint content); None for GrabCut."""
    directory = sam_labeling.get("embedding_cache_dir")
    if segmenter.name != "sam" or not directory:
        return None
    sam = sam_labeling["sam"]
    return EmbeddingCache(directory, checkpoint_fingerprint(sam["checkpoint"], sam["model_type"]))


def label_tiles(
    tiles: Partitions, cams: Partitions, prompts: pd.DataFrame, tile_index: pd.DataFrame,
    sam_labeling: dict, prompt_generation: dict, classes: list[str], device: str,
) -> dict[str, Callable[[], np.ndarray]]:
    """A pseudo-mask for every tile of the prompted splits (computed lazily at save time).

    Each mask is 255 past its tile's valid `height` and `width` (the padding outside the scene).
    """
    params = resolve_segmenter_params(sam_labeling, int(prompt_generation["threshold"]))
    segmenter = shared_segmenter(params, device)
    labeler = TileLabeler(
        segmenter, prompts, params["prompt_mode"], params["unprompted_positive"], build_embedding_cache(params, segmenter)
    )
    selected = tiles_of_split(tile_index, prompt_generation["splits"])
    logger.info("Labelling %d tiles with %s, prompt mode %s", len(selected), segmenter.name, params["prompt_mode"])
    return {
        tile["tile_id"]: labeler.for_tile(
            tile["tile_id"], tiles, cams, classes, positive_class_ids(tile, classes), len(selected),
            (int(tile["height"]), int(tile["width"])),
        )
        for tile in tile_rows(selected)
    }
