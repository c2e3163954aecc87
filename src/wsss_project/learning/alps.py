"""ALPS mask class association (seed 002): a pseudo class per region by online k-means on pooled features.

The regions come from ``sam_labeling.regions`` (segmenters/regions.py: superpixels or SAM's
automatic masks, already through the area gate of eq. 2-3, so an overly large region never reaches
the clustering). Then, per train tile:

1. Features (ALPS "Feature Extraction and Alignment"): with ``regions.source: sam_auto``, SAM's image
   embedding, as ALPS uses it (reusing the SAM embedding cache of ``sam_labeling.embedding_cache_dir``);
   with ``superpixels`` (no SAM), the run's localizer's encoder features (the trained ``cam_model``:
   the pixel-MIL scorer's last hidden layer, or the CAM classifier's backbone map), the only learnt
   image features a weight-free run has. The feature map is upsampled bilinearly to the tile
   (:func:`align_features`).
2. Eq. 4, the pseudo feature label of a region: the aligned map averaged over the region's pixels
   (:func:`pool_region_features`; the denominator is the region's pixel count, not the tile's, so a
   region's feature does not shrink with its area).
3. Online k-means (ALPS cites Cohen-Addad et al.; here scikit-learn's ``MiniBatchKMeans.partial_fit``)
   over mini-batches of tiles, in tile-id order, seeded by the run's seed: deterministic.
4. Each region takes its nearest centre (after the last update, as ALPS classifies every mask "based
   on the clustering centers"); a tile's cluster map paints them, the smallest region on top where
   regions overlap (as region voting does). Pixels of no region (gaps between SAM's masks, regions
   dropped by the area gate, a tile without regions) and the padding outside the scene are 255.

Model code only: the nodes (pipelines/segmentation_training) decide when it runs; the pre-training
on the maps is learning/segmentation_training.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from sklearn.cluster import MiniBatchKMeans
from torch.nn import functional as F

from wsss_project.contracts import IGNORE_INDEX
from wsss_project.errors import UserInputError
from wsss_project.segmenters.regions import RegionSet, RegionSource

logger = logging.getLogger(__name__)

PRETRAIN_NONE, PRETRAIN_ALPS = "none", "alps"
PRETRAIN_MODES = (PRETRAIN_NONE, PRETRAIN_ALPS)
PARAM_PREFIX = "segmentation_training.alps"
NO_REGION = -1  # in a top-region map: no region covers the pixel
TABLE_COLUMNS = {"cluster_id": "int64", "regions": "int64", "pixels": "int64", "tiles": "int64"}
_LOG_EVERY_TILES = 50


# --------------------------------------------------------------------------- eq. 4


def align_features(features: torch.Tensor, frame: tuple[int, int], valid: tuple[int, int]) -> np.ndarray:
    """ALPS's feature alignment: a ``(K, h, w)`` map upsampled bilinearly to the tile, cropped to its scene part.

    Args:
        features: ``(K, h, w)``, a grid covering ``frame`` (in tile pixels).
        frame: ``(FH, FW)``, the tile-pixel extent the grid covers (the tile itself for a
            localizer; SAM's padded square input scaled back to the tile for SAM).
        valid: ``(H, W)``, the tile's part inside the scene (the regions' image); ``<= frame``.

    Returns:
        float32 ``(K, H, W)``.
    """
    if valid[0] > frame[0] or valid[1] > frame[1]:
        raise ValueError(f"the scene part {valid} exceeds the feature frame {frame}")
    up = F.interpolate(features[None].float(), size=tuple(frame), mode="bilinear", align_corners=False)[0]
    return up[:, : valid[0], : valid[1]].numpy()


def pool_region_features(aligned: np.ndarray, regions: RegionSet) -> np.ndarray:
    """ALPS eq. 4, one pseudo feature label per region: the mean of the aligned features over its pixels.

    Args:
        aligned: ``(K, H, W)`` features aligned to the regions' image (:func:`align_features`).
        regions: the (gated) regions of that image.

    Returns:
        float32 ``(R, K)``; ``(0, K)`` for no region.
    """
    if tuple(aligned.shape[1:]) != tuple(regions.shape):
        raise ValueError(f"features of size {aligned.shape[1:]} do not match the regions' image {regions.shape}")
    flat = aligned.reshape(len(aligned), -1)
    pooled = np.zeros((len(regions), len(aligned)), dtype=np.float32)
    for row, pixels in enumerate(regions.pixels):
        pooled[row] = flat[:, pixels].mean(axis=1)
    return pooled


def top_region_map(regions: RegionSet) -> np.ndarray:
    """int32 ``(H, W)``: the index of the region shown at each pixel, :data:`NO_REGION` where none is.

    Regions are largest first, so painting them in order leaves the smallest on top (as
    :meth:`RegionSet.paint` does); int32, since a superpixel tile may hold more than 255 regions.
    """
    top = np.full(regions.shape[0] * regions.shape[1], NO_REGION, dtype=np.int32)
    for index, pixels in enumerate(regions.pixels):
        top[pixels] = index
    return top.reshape(regions.shape)


def cluster_map(top: np.ndarray, region_clusters: np.ndarray, tile_shape: tuple[int, int]) -> np.ndarray:
    """uint8 ``tile_shape`` map: each pixel's region's cluster, 255 for no region and outside the scene."""
    out = np.full(tile_shape, IGNORE_INDEX, dtype=np.uint8)
    lut = np.append(np.asarray(region_clusters, dtype=np.uint8), np.uint8(IGNORE_INDEX))  # index -1 -> 255
    out[: top.shape[0], : top.shape[1]] = lut[top]
    return out


# --------------------------------------------------------------------------- feature sources


class FeatureSource(Protocol):
    """Aligned features of one tile: ``(K, H, W)`` float32 over its scene part ``valid``."""

    name: str

    def aligned(self, image: np.ndarray, valid: tuple[int, int]) -> np.ndarray: ...


@dataclass
class LocalizerFeatures:
    """The trained localizer's encoder features (learning/localizers.py ``features``), for superpixels."""

    localizer: Any
    model: torch.nn.Module
    params: Mapping[str, Any]
    device: torch.device
    name: str = "localizer"

    def aligned(self, image: np.ndarray, valid: tuple[int, int]) -> np.ndarray:
        features = self.localizer.features(self.model, image[None], self.params, self.device)[0]
        return align_features(features, image.shape[:2], valid)


@dataclass
class SamEmbeddingFeatures:
    """SAM's image embedding (ALPS's features), through the embedding cache when one is configured.

    The whole tile is embedded, as the promptable labeller embeds it, so both share cache entries.
    """

    segmenter: Any  # segmenters.sam.SamSegmenter
    cache: Any = None  # segmenters.cache.EmbeddingCache | None
    name: str = "sam_embedding"

    def aligned(self, image: np.ndarray, valid: tuple[int, int]) -> np.ndarray:
        state = self.segmenter.embed(image) if self.cache is None else self.cache.get_or_compute(
            image, self.segmenter.embed)
        embedding = torch.as_tensor(state.arrays["embedding"])[0]
        return align_features(embedding, sam_frame(state.arrays["original_size"], state.arrays["input_size"]), valid)


def sam_frame(original_size: Any, input_size: Any) -> tuple[int, int]:
    """The tile-pixel extent of SAM's embedding grid.

    SAM resizes the tile so that its long side is the encoder's input side (``max(input_size)``)
    and pads the rest of that square; the grid covers the square, i.e. ``side * H / h_in`` tile
    rows and ``side * W / w_in`` columns.
    """
    (height, width), (h_in, w_in) = (int(v) for v in original_size), (int(v) for v in input_size)
    side = max(h_in, w_in)
    return round(side * height / h_in), round(side * width / w_in)


# --------------------------------------------------------------------------- clustering


@dataclass
class TileRegions:
    """One tile's regions for clustering: which region is on top where, and their pooled features."""

    tile_id: str
    shape: tuple[int, int]
    top: np.ndarray
    features: np.ndarray


def tile_region_features(
    tile_id: str, image: np.ndarray, valid: tuple[int, int], source: RegionSource, features: FeatureSource,
) -> tuple[TileRegions, int]:
    """The gated regions of a tile's scene part and their eq.-4 features; also how many the gate dropped."""
    part = np.ascontiguousarray(image[: valid[0], : valid[1]])
    every = source.all_regions(part)
    regions = every.gated(source.area_gate)
    pooled = pool_region_features(features.aligned(image, valid), regions) if len(regions) else np.zeros((0, 0))
    return TileRegions(tile_id, image.shape[:2], top_region_map(regions), pooled), len(every) - len(regions)


def _batches(tiles: list[TileRegions], batch_tiles: int, n_clusters: int) -> list[np.ndarray]:
    """Feature batches of ``batch_tiles`` tiles each; the first grows until it holds ``n_clusters``
    regions (MiniBatchKMeans seeds its centres from it); tiles without regions add nothing."""
    batches, current, n_tiles = [], [], 0
    for tile in tiles:
        if len(tile.features):
            current.append(tile.features)
        n_tiles += 1
        enough = sum(len(f) for f in current) >= n_clusters or batches
        if n_tiles >= batch_tiles and current and enough:
            batches.append(np.concatenate(current))
            current, n_tiles = [], 0
    if current:
        batches.append(np.concatenate(current))
    return batches


def fit_clusters(tiles: list[TileRegions], alps: Mapping[str, Any], seed: int) -> MiniBatchKMeans:
    """Online k-means over the tiles' region features, ``kmeans_passes`` passes of mini-batches of
    ``kmeans_batch_tiles`` tiles in the given order; deterministic for a seed."""
    n_clusters = int(alps["n_clusters"])
    n_regions = sum(len(t.features) for t in tiles)
    if n_regions < n_clusters:
        raise UserInputError(
            f"parameter `{PARAM_PREFIX}.n_clusters` ({n_clusters}) exceeds the {n_regions} regions of the train "
            "tiles that passed the area gate: lower it, or loosen sam_labeling.regions"
        )
    batches = _batches(tiles, int(alps["kmeans_batch_tiles"]), n_clusters)
    # n_init=1: partial_fit seeds the centres once, by k-means++ on the first batch.
    kmeans = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, n_init=1)
    for _ in range(int(alps["kmeans_passes"])):
        for batch in batches:
            kmeans.partial_fit(batch)
    return kmeans


def cluster_regions(
    tiles: list[tuple[str, np.ndarray, tuple[int, int]]], source: RegionSource, features: FeatureSource,
    alps: Mapping[str, Any], seed: int,
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """ALPS on a list of ``(tile_id, image, valid (H, W))``: a cluster map per tile and the cluster table.

    Returns:
        tile_id -> uint8 map (cluster 0..N-1, 255 where no region lies and outside the scene), and a
        table with one row per cluster (:data:`TABLE_COLUMNS`: its regions, painted pixels and tiles).
    """
    started, gated, prepared = time.perf_counter(), 0, []
    for done, (tile_id, image, valid) in enumerate(tiles, start=1):
        tile, dropped = tile_region_features(tile_id, image, valid, source, features)
        prepared.append(tile)
        gated += dropped
        if done % _LOG_EVERY_TILES == 0 or done == len(tiles):
            logger.info("ALPS regions and features of %d/%d tiles (%.1f tiles/s)", done, len(tiles),
                        done / max(time.perf_counter() - started, 1e-9))
    n_regions = sum(len(t.features) for t in prepared)
    logger.info("ALPS: %d regions (%s regions, %s features), %d dropped by the area gate %.2f, %d tiles without "
                "regions", n_regions, source.source, features.name, gated, source.area_gate,
                sum(1 for t in prepared if not len(t.features)))
    kmeans = fit_clusters(prepared, alps, seed)
    maps, n_clusters = {}, int(alps["n_clusters"])
    counts = {key: np.zeros(n_clusters, dtype=np.int64) for key in ("regions", "pixels", "tiles")}
    for tile in prepared:
        clusters = kmeans.predict(tile.features) if len(tile.features) else np.zeros(0, dtype=np.int64)
        maps[tile.tile_id] = cluster_map(tile.top, clusters, tile.shape)
        counts["regions"] += np.bincount(clusters, minlength=n_clusters)
        counts["pixels"] += np.bincount(maps[tile.tile_id].ravel(), minlength=IGNORE_INDEX + 1)[:n_clusters]
        counts["tiles"] += np.bincount(np.unique(clusters), minlength=n_clusters)
    table = pd.DataFrame({"cluster_id": np.arange(n_clusters), **counts}).astype(TABLE_COLUMNS)
    covered = sum(int((m != IGNORE_INDEX).sum()) for m in maps.values())
    logger.info("ALPS: %d clusters over %d tiles, %.1f%% of tile pixels covered, largest cluster %.1f%% of them",
                n_clusters, len(maps), 100 * covered / max(sum(m.size for m in maps.values()), 1),
                100 * table["pixels"].max() / max(covered, 1))
    return maps, table


def empty_cluster_table() -> pd.DataFrame:
    """The cluster table of a run without ALPS pre-training."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in TABLE_COLUMNS.items()})


def build_alps_sources(
    sam_labeling: Mapping[str, Any], localization: Mapping[str, Any], cam_model: dict, n_classes: int,
    device: torch.device,
) -> tuple[RegionSource, FeatureSource]:
    """The region source of ``sam_labeling.regions`` and its features: SAM's embedding for ``sam_auto``
    (the SAM of ``sam_labeling.sam``, embedding cache of ``sam_labeling.embedding_cache_dir``), else
    the trained localizer ``cam_model`` of ``localization.method``."""
    # Imported here: the schema imports this module (for PRETRAIN_MODES).
    from wsss_project.learning.localizers import localizer_for
    from wsss_project.segmenters.regions import SAM_AUTO, build_region_source

    regions = sam_labeling["regions"]
    if regions["source"] != SAM_AUTO:
        localizer = localizer_for(localization)
        model = localizer.build(n_classes, localization)
        model.load_state_dict(cam_model)
        return build_region_source(regions), LocalizerFeatures(localizer, model.to(device).eval(), localization, device)

    from wsss_project.foundation.sam import load_sam
    from wsss_project.segmenters.cache import EmbeddingCache
    from wsss_project.segmenters.sam import SamSegmenter
    from wsss_project.utils.fingerprint import checkpoint_fingerprint

    sam = sam_labeling["sam"]
    model = load_sam(sam["model_type"], sam["checkpoint"], device)
    directory = sam_labeling.get("embedding_cache_dir")
    # The key the promptable labeller uses (pipelines/sam_labeling), so the two share entries.
    cache = EmbeddingCache(directory, checkpoint_fingerprint(sam["checkpoint"], sam["model_type"])) if directory else None
    return build_region_source(regions, model), SamEmbeddingFeatures(SamSegmenter(model, device, sam), cache)
