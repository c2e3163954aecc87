"""Nodes of sam_labeling: prompts -> promptable segmenter -> one pseudo-mask per tile.

Pseudo-mask values: 0 = background, k = class k, 255 = ignore. A tile labelled negative for
every class is all background (the image-level label says so). A class that is positive but got
no prompt (its CAM never exceeds T) makes the whole tile 255 — we know it is there but not where,
so the segmentation model must not learn "background" from it. `unprompted_positive: background`
switches that off. Pixels outside the scene (the reflected padding of border tiles, past the tile's
valid `height` and `width`) are always 255: padding is not supervision.

The segmenter is built once per run by `build_segmenter` and passed to every `label_tiles` (the
main pipeline's and each sweep namespace's) through a MemoryDataset that assigns, never copies.
`label_tiles` labels every tile itself and returns the masks (one 256² uint8 mask is 64 KiB); tiles,
CAMs and embeddings are loaded one tile at a time.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from wsss_project.contracts import IGNORE_INDEX, cam_key
from wsss_project.imagery.tiling import TileWindow, mark_outside_scene
from wsss_project.segmenters import factory
from wsss_project.segmenters.base import ImageState, PromptableSegmenter, prompts_for_mode
from wsss_project.segmenters.cache import EmbeddingCache
from wsss_project.segmenters.region_voting import RegionLabeler
from wsss_project.segmenters.regions import RegionSource
from wsss_project.tile_data import (
    Partitions,
    load_partition,
    positive_class_ids,
    tile_rows,
    tiles_of_split,
)
from wsss_project.utils.fingerprint import checkpoint_fingerprint

logger = logging.getLogger(__name__)

UNPROMPTED_POLICIES = ("ignore", "background")


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
        # Imported here: the schema imports this module (for UNPROMPTED_POLICIES).
        from wsss_project.validation.schema import check_section

        check_section({"unprompted_positive": unprompted}, "sam_labeling", partial=True)
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


def build_segmenter(sam_labeling: dict, device: str) -> PromptableSegmenter | RegionSource:
    """The run's segmenter (a loaded SAM, GrabCut, or a region source for `segmenter: regions`),
    shared by every labelling node.

    Loading a SAM checkpoint costs seconds, decoding a tile's prompts from a cached embedding a
    fraction of one: every threshold and prompt-mode namespace labels with this one object.
    """
    return factory.build_segmenter(sam_labeling, device)


def build_embedding_cache(sam_labeling: dict, segmenter: PromptableSegmenter) -> EmbeddingCache | None:
    """A persisted embedding cache for SAM (keyed by checkpoint content); None for GrabCut."""
    directory = sam_labeling.get("embedding_cache_dir")
    if segmenter.name != "sam" or not directory:
        return None
    sam = sam_labeling["sam"]
    return EmbeddingCache(directory, checkpoint_fingerprint(sam["checkpoint"], sam["model_type"]))


def _labeler(
    segmenter: PromptableSegmenter | RegionSource, prompts: pd.DataFrame, sam_labeling: dict, threshold: int,
) -> TileLabeler | RegionLabeler:
    """Prompts -> promptable segmenter, or, for `segmenter: regions`, region voting (no prompts)."""
    if isinstance(segmenter, RegionSource):
        logger.info("Labelling by region voting (%s regions, area gate %s, mean CAM > T = %d); "
                    "sam_labeling.prompt_mode and the prompts are not used", segmenter.source,
                    segmenter.area_gate, threshold)
        return RegionLabeler(segmenter, threshold, sam_labeling["unprompted_positive"])
    segmenter = segmenter.at_threshold(threshold)
    logger.info("Labelling with %s, prompt mode %s", segmenter.name, sam_labeling["prompt_mode"])
    return TileLabeler(
        segmenter, prompts, sam_labeling["prompt_mode"], sam_labeling["unprompted_positive"],
        build_embedding_cache(sam_labeling, segmenter),
    )


def label_tiles(
    segmenter: PromptableSegmenter | RegionSource, tiles: Partitions, cams: Partitions, prompts: pd.DataFrame,
    tile_index: pd.DataFrame, sam_labeling: dict, prompt_generation: dict, classes: list[str],
) -> dict[str, np.ndarray]:
    """A pseudo-mask for every tile of the prompted splits.

    Each mask is 255 past its tile's valid `height` and `width` (the padding outside the scene).
    A region source (`segmenter: regions`) labels by region voting at T and does not read `prompts`.
    """
    labeler = _labeler(segmenter, prompts, sam_labeling, int(prompt_generation["threshold"]))
    selected = tile_rows(tiles_of_split(tile_index, prompt_generation["splits"]))
    logger.info("Labelling %d tiles", len(selected))
    masks = {}
    for tile in selected:
        tile_id = tile["tile_id"]
        image = load_partition(tiles, tile_id, "tiles")
        positive = [(k, load_partition(cams, cam_key(classes[k - 1], tile_id), "cams"))
                    for k in positive_class_ids(tile, classes)]
        masks[tile_id] = labeler.label(tile_id, image, positive, len(selected), (int(tile["height"]), int(tile["width"])))
    return masks
