"""Nodes of sam_labeling: prompts -> promptable segmenter -> one pseudo-mask per tile.

Pseudo-mask values: 0 = background, k = class k, 255 = ignore. A tile labelled negative for
every class is all background (the image-level label says so). A class that is positive but got
no prompt (its CAM never exceeds T) makes the whole tile 255 — we know it is there but not where,
so the segmentation model must not learn "background" from it. `unprompted_positive: background`
switches that off. Pixels outside the scene (the reflected padding of border tiles, past the tile's
valid `height` and `width`) are always 255: padding is not supervision.

Which masks are kept (`sam_labeling.merge`, `ios.min_overlap`, `min_confidence`, `confidence`;
segmenters/mask_rules.py): with the defaults (`merge: segmenter`, `min_confidence: null`) every
mask is kept, as before. With `merge: ios` a mask that disagrees with its class's CAM region
(intersection over the mask < min_overlap) is rejected, and so is a mask whose confidence is below
`min_confidence`. A rejected mask's pixels are 255, unless a kept mask covers them. Pixels of a
positive tile that no mask covers stay background, as before: the CAM and the segmenter both point
elsewhere, and the rule judges masks, not the rest of the tile; so a positive class whose every
mask was rejected leaves its tile background outside those (ignored) masks — unlike a class with no
prompt at all, whose tile is 255 by `unprompted_positive`. Every mask is one row of the masks table
(`pseudo_mask_table`: area, confidences, IOS, kept, rejected_by), and the counts are logged.

The segmenter is built once per run by `build_segmenter` and passed to every `label_tiles` node (the
main pipeline's and each sweep namespace's) through a MemoryDataset that assigns, never copies.
That node (`label_tiles_with_table`; `label_tiles` is the same without the table) labels every tile
itself and returns the masks (one 256² uint8 mask is 64 KiB) and the masks table; tiles, CAMs and
embeddings are loaded one tile at a time.

With `compute.backend: dask` (compute/) the tiles are labelled as Dask tasks of `compute.tiles_per_task`
tiles: each worker builds the segmenter once from `sam_labeling` and `device` (`auto` is resolved on the
worker, so GPU workers use their GPU; a SAM checkpoint path must be readable there), SAM one task at a
time per worker. The cluster's workers replace the `sam_labeling.workers` thread pool (the schema then
requires `workers: auto`). Masks and table rows come back in tile order: the same bytes as here.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import pandas as pd

from wsss_project.compute.backend import WorkerModel, task_spans, uses_dask
from wsss_project.compute.cluster import tile_mapper
from wsss_project.contracts import IGNORE_INDEX, cam_key
from wsss_project.imagery.tiling import TileWindow, mark_outside_scene
from wsss_project.segmenters import factory
from wsss_project.segmenters.base import (
    CONFIDENCES,
    ImageState,
    PromptableSegmenter,
    Segmentation,
    prompts_for_mode,
)
from wsss_project.segmenters.cache import EmbeddingCache
from wsss_project.segmenters.mask_rules import (
    REJECTIONS,
    TABLE_COLUMNS,
    MaskRule,
    MaskVerdicts,
    ignore_rejected,
)
from wsss_project.segmenters.region_voting import RegionLabeler
from wsss_project.segmenters.regions import RegionSource
from wsss_project.tile_data import (
    Partitions,
    load_partition,
    positive_class_ids,
    tile_rows,
    tiles_of_split,
)
from wsss_project.utils.fingerprint import checkpoint_fingerprint, params_fingerprint

logger = logging.getLogger(__name__)

UNPROMPTED_POLICIES = ("ignore", "background")
# The sam_labeling keys that build the segmenter (segmenters/factory.py): a worker's segmenter is keyed by these.
SEGMENTER_KEYS = ("segmenter", "sam", "grabcut", "regions")
PROGRESS_EVERY_TILES = 50


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
    """Labels one tile at a time with a segmenter, reusing cached image embeddings.

    rule: which masks are kept and what the masks table records (None = every mask kept and no
    table, as before masks had verdicts); with a rule, each mask's verdict is a row of `rows`.
    """

    def __init__(
        self, segmenter: PromptableSegmenter, prompts: pd.DataFrame, prompt_mode: str,
        unprompted: str, cache: EmbeddingCache | None, rule: MaskRule | None = None,
    ) -> None:
        # Imported here: the schema imports this module (for UNPROMPTED_POLICIES).
        from wsss_project.validation.schema import check_section

        check_section({"unprompted_positive": unprompted}, "sam_labeling", partial=True)
        self.segmenter, self.prompt_mode, self.unprompted, self.cache = segmenter, prompt_mode, unprompted, cache
        self.rule = rule
        self.by_tile = {key: group for key, group in prompts.groupby(["tile_id", "class_id"], sort=False)}
        self.rows: list[dict] = []
        self.done, self.started = 0, time.perf_counter()
        # Tiles may be labelled by several threads (`sam_labeling.workers`): the counters and the
        # rows are shared. Rows arrive in completion order; the node restores tile order.
        self.lock = threading.Lock()

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
        valid = np.zeros((height, width), dtype=bool)
        valid[: valid_size[0], : valid_size[1]] = True
        kept_union, rejected_union = np.zeros_like(valid), np.zeros_like(valid)
        for class_id, heatmap in positive:
            group = self.by_tile.get((tile_id, class_id))
            if group is None:
                unprompted = True
                continue
            boxes, points, used = prompts_for_mode(
                group[["x0", "y0", "w", "h"]].to_numpy(), group[["px", "py"]].to_numpy(), self.prompt_mode
            )
            if boxes is None and (points is None or len(points) == 0):
                unprompted = True  # point mode and every centroid missing
                continue
            state = state or self._state(image)
            if self.rule is None:
                masks, scores = self.segmenter.segment(state, boxes, points, prior=heatmap)
                results.append((class_id, masks, scores))
                continue
            result = self.segmenter.segment_scored(state, boxes, points, prior=heatmap)
            verdicts = self.rule.judge(result, heatmap, valid)
            kept = verdicts.kept
            results.append((class_id, result.masks[kept], result.scores[kept]))
            kept_union |= result.masks[kept].any(axis=0)
            rejected_union |= result.masks[~kept].any(axis=0)
            self._record(tile_id, class_id, group["prompt_id"].to_numpy()[used], result, verdicts)
        mask = merge_class_masks(height, width, results)
        if rejected_union.any():
            mask = ignore_rejected(mask, kept_union, rejected_union)
        if unprompted and self.unprompted == "ignore":
            mask[:] = IGNORE_INDEX
        self._progress(total)
        return mark_outside_scene(mask, TileWindow(0, 0, *valid_size), IGNORE_INDEX)

    def _record(
        self, tile_id: str, class_id: int, prompt_ids: np.ndarray, result: Segmentation, verdicts: MaskVerdicts,
    ) -> None:
        """One masks-table row per mask of one prompt set."""
        nan = np.full(len(verdicts.ios), np.nan)
        measured = {name: np.asarray(result.confidences.get(name, nan), dtype=np.float64) for name in CONFIDENCES}
        rows = []
        for k in range(len(verdicts.ios)):
            rows.append({
                "tile_id": tile_id, "class_id": int(class_id), "mask_index": int(prompt_ids[k]),
                "area": int(verdicts.area[k]), "score": float(result.scores[k]),
                "predicted_iou": float(measured["predicted_iou"][k]),
                "stability_score": float(measured["stability_score"][k]), "ios": float(verdicts.ios[k]),
                "confidence_name": self.rule.confidence, "confidence": float(verdicts.confidence[k]),
                "kept": bool(verdicts.kept[k]), "rejected_by": str(verdicts.rejected_by[k]),
            })
        with self.lock:
            self.rows.extend(rows)

    def table(self, classes: list[str]) -> pd.DataFrame:
        """The masks table (segmenters/mask_rules.TABLE_COLUMNS), one row per mask, in labelling order."""
        table = pd.DataFrame(self.rows, columns=[c for c in TABLE_COLUMNS if c != "class_name"])
        table.insert(2, "class_name", [classes[k - 1] for k in table["class_id"]])
        return table.astype(TABLE_COLUMNS)

    def _progress(self, total: int) -> None:
        with self.lock:
            self.done += 1
            done = self.done
        if done % 50 == 0 or done == total:
            rate = done / max(time.perf_counter() - self.started, 1e-9)
            cache = f", cache {self.cache.hits} hits / {self.cache.misses} misses" if self.cache else ""
            logger.info("Labelled %d/%d tiles (%.1f tiles/s%s)", done, total, rate, cache)


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
    announce: bool = True,
) -> TileLabeler | RegionLabeler:
    """Prompts -> promptable segmenter (with its mask rule), or, for `segmenter: regions`, region
    voting (no prompts; the schema refuses merge: ios and min_confidence there). announce: log how
    (once per node; not on every Dask task)."""
    if isinstance(segmenter, RegionSource):
        if announce:
            logger.info("Labelling by region voting (%s regions, area gate %s, mean CAM > T = %d); "
                        "sam_labeling.prompt_mode and the prompts are not used", segmenter.source,
                        segmenter.area_gate, threshold)
        return RegionLabeler(segmenter, threshold, sam_labeling["unprompted_positive"])
    segmenter = segmenter.at_threshold(threshold)
    rule = MaskRule.from_params(sam_labeling, segmenter, threshold)
    if announce:
        logger.info("Labelling with %s, prompt mode %s, %s", segmenter.name, sam_labeling["prompt_mode"], rule.describe)
    return TileLabeler(
        segmenter, prompts, sam_labeling["prompt_mode"], sam_labeling["unprompted_positive"],
        build_embedding_cache(sam_labeling, segmenter), rule,
    )


def label_tiles_with_table(
    segmenter: PromptableSegmenter | RegionSource, tiles: Partitions, cams: Partitions, prompts: pd.DataFrame,
    tile_index: pd.DataFrame, sam_labeling: dict, prompt_generation: dict, classes: list[str],
    compute: dict | None = None, device: str = "auto",
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """A pseudo-mask for every tile of the prompted splits, and the masks table.

    Each mask is 255 past its tile's valid `height` and `width` (the padding outside the scene).
    The masks table has one row per segmenter mask (segmenters/mask_rules.TABLE_COLUMNS): its
    area, confidences, IOS with the CAM at the run's T, and whether it was kept (else why not).
    A region source (`segmenter: regions`) labels by region voting at T, does not read `prompts`
    and has no segmenter masks: its table is empty.
    compute, device: the `compute` parameters (None = local) and the run's `device` (read by the Dask
    workers, which build their own segmenter; see the module docstring).
    """
    labeler = _labeler(segmenter, prompts, sam_labeling, int(prompt_generation["threshold"]))
    selected = tile_rows(tiles_of_split(tile_index, prompt_generation["splits"]))
    if uses_dask(compute):
        masks = _label_on_cluster(labeler, selected, tiles, cams, prompts, sam_labeling, prompt_generation, classes,
                                  compute, device)
    else:
        masks = _label_here(labeler, selected, tiles, cams, sam_labeling, classes)
    if isinstance(labeler, RegionLabeler):
        return masks, pd.DataFrame({c: pd.Series(dtype=t) for c, t in TABLE_COLUMNS.items()})
    order = {tile_id: position for position, tile_id in enumerate(masks)}
    table = labeler.table(classes)
    # Rows of one tile come from one thread, in order; a stable sort by tile restores labelling order.
    table = table.sort_values("tile_id", key=lambda ids: ids.map(order), kind="stable").reset_index(drop=True)
    _log_verdicts(table, labeler.rule)
    return masks, table


def _tile_inputs(tile: dict, tiles: Partitions, cams: Partitions, classes: list[str]) -> tuple:
    """(tile_id, image, [(class_id, CAM heatmap) of its positive classes], valid (height, width))."""
    tile_id = tile["tile_id"]
    positive = [(k, load_partition(cams, cam_key(classes[k - 1], tile_id), "cams"))
                for k in positive_class_ids(tile, classes)]
    return tile_id, load_partition(tiles, tile_id, "tiles"), positive, (int(tile["height"]), int(tile["width"]))


def _label_here(
    labeler: TileLabeler | RegionLabeler, selected: list[dict], tiles: Partitions, cams: Partitions,
    sam_labeling: dict, classes: list[str],
) -> dict[str, np.ndarray]:
    """compute.backend local: the tiles labelled by `sam_labeling.workers` threads, in tile order."""
    workers = factory.labelling_workers(sam_labeling)
    logger.info("Labelling %d tiles (%d at once, sam_labeling.workers)", len(selected), workers)

    def label_one(tile: dict) -> np.ndarray:
        tile_id, image, positive, valid_size = _tile_inputs(tile, tiles, cams, classes)
        return labeler.label(tile_id, image, positive, len(selected), valid_size)

    # Each tile's mask is a function of that tile alone (GrabCut reseeds OpenCV's per-thread RNG
    # per call), so the masks do not depend on the number of workers; map keeps tile order.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip((tile["tile_id"] for tile in selected), pool.map(label_one, selected), strict=True))


def _worker_segmenter(segmenter_params: dict, device: str, payload: None) -> PromptableSegmenter | RegionSource:
    """A Dask worker's segmenter, built once per worker (device `auto` resolved there)."""
    return factory.build_segmenter(segmenter_params, device)


def _label_batch(
    sam_labeling: dict, threshold: int, total: int, segmenter: PromptableSegmenter | RegionSource,
    item: tuple[list[tuple], pd.DataFrame],
) -> tuple[list[np.ndarray], list[dict]]:
    """A worker's task: the masks of consecutive tiles, in order, and their masks-table rows."""
    batch, prompts = item
    labeler = _labeler(segmenter, prompts, sam_labeling, threshold, announce=False)
    masks = [labeler.label(tile_id, image, positive, total, valid_size) for tile_id, image, positive, valid_size in batch]
    return masks, list(getattr(labeler, "rows", []))


def _label_on_cluster(
    labeler: TileLabeler | RegionLabeler, selected: list[dict], tiles: Partitions, cams: Partitions,
    prompts: pd.DataFrame, sam_labeling: dict, prompt_generation: dict, classes: list[str], compute: dict, device: str,
) -> dict[str, np.ndarray]:
    """compute.backend dask: tasks of `compute.tiles_per_task` tiles; masks and the driver's labeler's
    table rows merged in tile order, as the local backend gives them."""
    segmenter_params = {key: sam_labeling[key] for key in SEGMENTER_KEYS}
    identity = {"params": segmenter_params, "device": device}
    if factory.uses_sam(sam_labeling):  # the checkpoint's content, not only its path
        identity["checkpoint"] = checkpoint_fingerprint(sam_labeling["sam"]["checkpoint"], sam_labeling["sam"]["model_type"])
    model = WorkerModel(params_fingerprint("segmenter", identity), partial(_worker_segmenter, segmenter_params, device),
                        exclusive=factory.uses_sam(sam_labeling))
    spans = task_spans(len(selected), 1, int(compute["tiles_per_task"]))
    logger.info("Labelling %d tiles as %d Dask tasks (the cluster's workers replace sam_labeling.workers)",
                len(selected), len(spans))
    items = (
        ([_tile_inputs(tile, tiles, cams, classes) for tile in selected[a:b]],
         prompts[prompts["tile_id"].isin([tile["tile_id"] for tile in selected[a:b]])])
        for a, b in spans
    )
    apply = partial(_label_batch, sam_labeling, int(prompt_generation["threshold"]), len(selected))
    masks, started = {}, time.perf_counter()
    with tile_mapper(compute) as mapper:
        for (a, b), (batch_masks, rows) in zip(spans, mapper.map(model, apply, items), strict=True):
            masks.update(zip((tile["tile_id"] for tile in selected[a:b]), batch_masks, strict=True))
            if isinstance(labeler, TileLabeler):
                labeler.rows.extend(rows)
            if b // PROGRESS_EVERY_TILES > a // PROGRESS_EVERY_TILES or b == len(selected):
                logger.info("Labelled %d/%d tiles (%.1f tiles/s)", b, len(selected), b / (time.perf_counter() - started))
    return masks


def label_tiles(
    segmenter: PromptableSegmenter | RegionSource, tiles: Partitions, cams: Partitions, prompts: pd.DataFrame,
    tile_index: pd.DataFrame, sam_labeling: dict, prompt_generation: dict, classes: list[str],
    compute: dict | None = None, device: str = "auto",
) -> dict[str, np.ndarray]:
    """The pseudo-masks of :func:`label_tiles_with_table` without the masks table."""
    return label_tiles_with_table(
        segmenter, tiles, cams, prompts, tile_index, sam_labeling, prompt_generation, classes, compute, device
    )[0]


def _log_verdicts(table: pd.DataFrame, rule: MaskRule) -> None:
    """How many masks were kept and how many became ignore, by reason."""
    reasons = table.loc[~table["kept"], "rejected_by"].value_counts()
    counts = ", ".join(f"{int(reasons.get(reason, 0))} by {reason}" for reason in REJECTIONS)
    ignored = int((~table["kept"]).sum())
    logger.info("Masks: %d of %d kept, %d turned to ignore (%s); %s", len(table) - ignored, len(table), ignored,
                counts, rule.describe)
