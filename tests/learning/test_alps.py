"""ALPS mask class association: eq. 4 pooling, feature alignment, online k-means, cluster maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_sam import build_tiny_sam
from toy_tiles import PRC_OFF

from wsss_project.contracts import IGNORE_INDEX
from wsss_project.errors import UserInputError
from wsss_project.learning.alps import (
    NO_REGION,
    LocalizerFeatures,
    SamEmbeddingFeatures,
    align_features,
    cluster_map,
    cluster_regions,
    pool_region_features,
    sam_frame,
    top_region_map,
)
from wsss_project.learning.localizers import LOCALIZERS
from wsss_project.learning.mil_training import build_pixel_mil
from wsss_project.segmenters.cache import EmbeddingCache
from wsss_project.segmenters.regions import RegionSet, RegionSource
from wsss_project.segmenters.sam import SamSegmenter

CPU = torch.device("cpu")
ALPS = {"n_clusters": 2, "kmeans_batch_tiles": 1, "kmeans_passes": 3, "epochs": 1}


# --------------------------------------------------------------------------- eq. 4


def test_a_regions_pooled_feature_is_the_mean_over_its_own_pixels_not_the_tile():
    aligned = np.zeros((2, 4, 4), dtype=np.float32)
    aligned[0, 0, 0], aligned[0, 0, 1] = 2.0, 4.0  # the 2-pixel region's values in channel 0
    aligned[1] = 1.0
    aligned[0, 3, 3] = 100.0  # outside the region: must not count
    label_map = np.full((4, 4), -1)
    label_map[0, :2] = 0
    regions = RegionSet.from_label_map(label_map)
    pooled = pool_region_features(aligned, regions)
    # (2 + 4) / 2 pixels = 3; a denominator of the tile's 16 pixels would give 0.375.
    np.testing.assert_allclose(pooled, [[3.0, 1.0]])


def test_pooling_rejects_features_of_another_size():
    regions = RegionSet.from_label_map(np.zeros((4, 4), dtype=int))
    with pytest.raises(ValueError, match="do not match"):
        pool_region_features(np.zeros((1, 4, 5), np.float32), regions)


def test_alignment_upsamples_the_grid_to_the_frame_and_keeps_the_scene_part():
    grid = torch.zeros(1, 2, 2)
    grid[0, :, 1] = 8.0  # right half high
    aligned = align_features(grid, (8, 8), (8, 6))
    assert aligned.shape == (1, 8, 6)
    assert aligned[0, :, 0].max() == 0.0 and aligned[0, :, 5].min() > 0  # bilinear ramp, left to right
    assert np.all(np.diff(aligned[0, 0]) >= 0)
    with pytest.raises(ValueError, match="exceeds"):
        align_features(grid, (8, 8), (9, 8))


def test_sams_grid_covers_its_padded_square_scaled_back_to_the_tile():
    # A 256 x 128 tile resized to SAM's 1024 long side is 1024 x 512, padded to 1024²:
    # the grid covers 256 x 256 tile pixels, of which the tile is the left half.
    assert sam_frame((256, 128), (1024, 512)) == (256, 256)
    assert sam_frame((256, 256), (1024, 1024)) == (256, 256)


# --------------------------------------------------------------------------- maps


def test_the_smallest_region_is_on_top_and_uncovered_pixels_and_padding_are_255():
    big = np.zeros((4, 4), bool)
    big[:, :3] = True
    small = np.zeros((4, 4), bool)
    small[0, 0] = True
    regions = RegionSet.from_masks(np.stack([small, big]))  # sorted largest first
    top = top_region_map(regions)
    assert top[0, 0] == 1 and top[1, 1] == 0 and top[0, 3] == NO_REGION
    out = cluster_map(top, np.array([7, 3]), (5, 6))
    assert out[0, 0] == 3 and out[1, 1] == 7
    assert (out[:, 3:] == IGNORE_INDEX).all() and (out[4:] == IGNORE_INDEX).all()  # uncovered and padding
    assert out.dtype == np.uint8


# --------------------------------------------------------------------------- clustering


class LabelMapRegions(RegionSource):
    """A region source that returns a fixed label map (the test decides the regions)."""

    source = "fixed"

    def __init__(self, label_map: np.ndarray, area_gate: float = 0.3) -> None:
        super().__init__(area_gate)
        self.label_map = label_map

    def all_regions(self, image):
        return RegionSet.from_label_map(self.label_map[: image.shape[0], : image.shape[1]])


class ImageAsFeatures:
    """Features = the image's first channel, as float (so a region's feature is its brightness)."""

    name = "image"

    def aligned(self, image, valid):
        return image[: valid[0], : valid[1], :1].transpose(2, 0, 1).astype(np.float32)


def _tile(values_by_label: dict[int, int], label_map: np.ndarray) -> np.ndarray:
    image = np.zeros((*label_map.shape, 3), np.uint8)
    for label, value in values_by_label.items():
        image[label_map == label] = value
    return image


def _quadrants(size: int = 8) -> np.ndarray:
    label_map = np.zeros((size, size), int)
    half = size // 2
    label_map[:half, half:], label_map[half:, :half], label_map[half:, half:] = 1, 2, 3
    return label_map


def test_separated_features_land_in_different_clusters_identical_ones_in_the_same():
    labels = _quadrants()
    # Regions 0 and 3 are dark (10), 1 and 2 bright (240), in every tile.
    tiles = [(f"t{k}", _tile({0: 10, 1: 240, 2: 240, 3: 10}, labels), labels.shape) for k in range(3)]
    maps, table = cluster_regions(tiles, LabelMapRegions(labels), ImageAsFeatures(), ALPS, seed=0)
    for tile_map in maps.values():
        dark, bright = tile_map[0, 0], tile_map[0, -1]
        assert dark != bright
        assert tile_map[-1, -1] == dark and tile_map[-1, 0] == bright
    assert maps["t0"].tolist() == maps["t2"].tolist()  # the same pixels get the same cluster in every tile
    assert table["regions"].tolist() == [6, 6] and table["tiles"].tolist() == [3, 3]
    assert table["pixels"].sum() == 3 * labels.size


def test_the_area_gate_drops_a_large_region_before_clustering():
    labels = np.zeros((8, 8), int)
    labels[:2, :2], labels[:2, 6:] = 1, 2  # two 4-pixel regions; region 0 covers 87 % of the tile
    tiles = [(f"t{k}", _tile({0: 128, 1: 10, 2: 240}, labels), labels.shape) for k in range(2)]
    maps, table = cluster_regions(tiles, LabelMapRegions(labels, area_gate=0.3), ImageAsFeatures(), ALPS, seed=0)
    assert (maps["t0"][labels == 0] == IGNORE_INDEX).all()
    assert table["regions"].sum() == 4  # two small regions per tile: the large one never reached k-means
    assert maps["t0"][0, 0] != maps["t0"][0, 7]  # the two small regions (10 and 240) are the two clusters


def test_online_kmeans_over_batches_is_deterministic_for_a_seed():
    rng = np.random.default_rng(3)
    labels = _quadrants(16)
    tiles = [(f"t{k}", _tile(dict(enumerate(rng.integers(0, 255, 4).tolist())), labels), labels.shape)
             for k in range(6)]
    params = {**ALPS, "n_clusters": 3, "kmeans_batch_tiles": 2}
    first, _ = cluster_regions(tiles, LabelMapRegions(labels), ImageAsFeatures(), params, seed=7)
    second, _ = cluster_regions(tiles, LabelMapRegions(labels), ImageAsFeatures(), params, seed=7)
    assert all((first[k] == second[k]).all() for k in first)
    assert set(np.unique(np.stack(list(first.values())))) <= {0, 1, 2}


def test_a_tile_without_regions_is_all_ignore_and_too_few_regions_is_an_error():
    labels = _quadrants()
    empty = np.full((8, 8), -1)
    tiles = [("t0", _tile({0: 10, 1: 240, 2: 10, 3: 240}, labels), (8, 8))]
    maps, _ = cluster_regions([*tiles, ("t1", np.zeros((8, 8, 3), np.uint8), (8, 8))],
                              _PerTile({"t0": labels, "t1": empty}), ImageAsFeatures(), ALPS, seed=0)
    assert (maps["t1"] == IGNORE_INDEX).all()
    with pytest.raises(UserInputError, match="segmentation_training.alps.n_clusters"):
        cluster_regions(tiles, LabelMapRegions(labels), ImageAsFeatures(), {**ALPS, "n_clusters": 5}, seed=0)


class _PerTile(RegionSource):
    """Label maps chosen by the image (all-zero image -> the 't1' map)."""

    source = "fixed"

    def __init__(self, maps):
        super().__init__(1.0)
        self.maps = maps

    def all_regions(self, image):
        return RegionSet.from_label_map(self.maps["t1" if not image.any() else "t0"])


def test_the_valid_part_bounds_regions_and_the_padding_is_255():
    labels = _quadrants()
    image = _tile({0: 10, 1: 240, 2: 10, 3: 240}, labels)
    maps, _ = cluster_regions([("t0", image, (8, 6)), ("t1", image, (8, 8))], LabelMapRegions(labels, 1.0),
                              ImageAsFeatures(), ALPS, seed=0)
    assert (maps["t0"][:, 6:] == IGNORE_INDEX).all() and (maps["t0"][:, :6] != IGNORE_INDEX).all()


# --------------------------------------------------------------------------- feature sources


def test_localizer_features_are_aligned_to_the_scene_part():
    localization = {**PRC_OFF, "image_mean": [0.5] * 3, "image_std": [0.25] * 3, "mil": {"input_scale": 0.5}}
    model = build_pixel_mil(1, {"width": 6, "n_layers": 2, "input_scale": 0.5})
    source = LocalizerFeatures(LOCALIZERS["mil"], model, localization, CPU)
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    aligned = source.aligned(image, (32, 20))
    assert aligned.shape == (6, 32, 20) and np.isfinite(aligned).all()


def test_sam_features_use_the_embedding_cache(tmp_path):
    segmenter = SamSegmenter(build_tiny_sam(), CPU, {"multimask_output": "auto", "stability_score_offset": 1.0})
    cache = EmbeddingCache(tmp_path, "tiny-sam-key")
    source = SamEmbeddingFeatures(segmenter, cache)
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    first = source.aligned(image, (64, 48))
    second = source.aligned(image, (64, 48))
    assert (cache.misses, cache.hits) == (1, 1)
    assert first.shape == (segmenter.model.image_encoder.neck[0].out_channels, 64, 48)
    np.testing.assert_array_equal(first, second)


def test_cam_classifier_features_are_its_backbone_map_aligned_to_the_tile():
    localization = {**PRC_OFF, "image_mean": [0.5] * 3, "image_std": [0.25] * 3, "backbone": "small", "base_width": 4,
                    "blocks": [1, 1, 1, 1], "output_stride": 16, "pretrained_backbone": None}
    localizer = LOCALIZERS["cam_classifier"]
    model = localizer.build(1, localization)
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    raw = localizer.features(model, image[None], localization, CPU)
    assert raw.shape == (1, model.n_features, 4, 4)  # stride 16
    aligned = LocalizerFeatures(localizer, model, localization, CPU).aligned(image, (64, 40))
    assert aligned.shape == (model.n_features, 64, 40)
