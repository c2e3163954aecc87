"""Region sets: ALPS's instance proportion and area gate, mask decomposition, superpixels, SAM's
automatic masks (a tiny random-weight SAM)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_sam import build_tiny_sam, register_tiny_sam
from toy_tiles import REGIONS, SAM_LABELING, toy_tiles

from wsss_project.errors import UserInputError
from wsss_project.imagery.synthetic import generate_scene
from wsss_project.segmenters.factory import build_segmenter, uses_sam
from wsss_project.segmenters.regions import (
    RegionSet,
    SamAutoRegions,
    SuperpixelRegions,
    area_gate,
    build_region_source,
    decompose_label_map,
    instance_proportion,
)

SIDE = 10  # 100-pixel images: a mask of n pixels has instance proportion n / 100


def _mask_of(n_pixels: int) -> np.ndarray:
    mask = np.zeros(SIDE * SIDE, bool)
    mask[:n_pixels] = True
    return mask.reshape(SIDE, SIDE)


def _synthetic_tile(size: int = 128) -> np.ndarray:
    image, _ = generate_scene(3, size, size, {})
    return image


# --------------------------------------------------------------------------- ALPS eq. 2-3


def test_instance_proportion_is_the_instance_share_of_all_pixels():
    masks = np.stack([_mask_of(0), _mask_of(30), _mask_of(100)])
    np.testing.assert_allclose(instance_proportion(masks), [0.0, 0.3, 1.0])


def test_the_area_gate_keeps_masks_up_to_sigma_and_drops_larger_ones():
    """Eq. 3: kept when PI <= sigma (the boundary included), dropped when PI > sigma. A gate with
    the inequality flipped, or strict, fails here."""
    masks = np.stack([_mask_of(5), _mask_of(29), _mask_of(30), _mask_of(31), _mask_of(90)])
    assert area_gate(masks, 0.3).tolist() == [True, True, True, False, False]
    assert area_gate(masks, 1.0).all()  # sigma = 1 keeps every mask


def test_a_region_set_gates_as_area_gate_does():
    rng = np.random.default_rng(0)
    masks = rng.random((12, SIDE, SIDE)) < rng.random((12, 1, 1))  # regions of many sizes
    regions = RegionSet.from_masks(masks)
    kept = regions.gated(0.3)
    assert sorted(map(int, kept.areas())) == sorted(int(m.sum()) for m in masks[area_gate(masks, 0.3)] if m.any())
    assert all(kept.proportions() <= 0.3)


def test_decomposition_gives_one_binary_mask_per_label():
    label_map = np.array([[0, 0, 2], [5, 2, 2], [-1, 5, 0]])
    masks = decompose_label_map(label_map)
    assert masks.shape == (3, 3, 3)
    for mask, label in zip(masks, (0, 2, 5), strict=True):
        np.testing.assert_array_equal(mask, label_map == label)
    assert (masks.sum(axis=0) == (label_map >= 0)).all()  # "no region" (-1) is in no mask


def test_a_region_set_from_a_label_map_holds_the_decomposed_masks_largest_first():
    label_map = np.array([[0, 0, 2], [5, 2, 2], [-1, 5, 0]])
    regions = RegionSet.from_label_map(label_map)
    assert regions.areas().tolist() == [3, 3, 2]  # largest first, ties in label order
    np.testing.assert_array_equal(regions.masks(), decompose_label_map(label_map)[[0, 1, 2]])


def test_means_and_painting():
    big, small = np.zeros((2, 4, 4), bool)
    big[:, :3] = True
    small[:2, :2] = True
    regions = RegionSet.from_masks(np.stack([small, big]))  # stored largest first whatever the input order
    values = np.arange(16, dtype=np.uint8).reshape(4, 4)
    np.testing.assert_allclose(regions.means(values), [values[big].mean(), values[small].mean()])
    painted = regions.paint(np.array([1, 2]), fill=255)
    assert (painted[:2, :2] == 2).all()  # overlap: the smallest region wins
    assert (painted[big & ~small] == 1).all() and (painted[:, 3] == 255).all()  # uncovered: fill


# --------------------------------------------------------------------------- superpixels


@pytest.mark.parametrize("method", ["slic", "felzenszwalb"])
def test_superpixels_cover_every_pixel_exactly_once(method):
    source = SuperpixelRegions({**REGIONS["superpixels"], "method": method}, area_gate=1.0)
    image = _synthetic_tile()
    regions = source.regions(image)
    assert len(regions) > 1
    assert (regions.masks().sum(axis=0) == 1).all()
    again = source.regions(image)  # deterministic
    assert all(np.array_equal(a, b) for a, b in zip(regions.pixels, again.pixels, strict=True))


def test_slic_regions_follow_n_segments():
    image = _synthetic_tile()
    counts = [len(SuperpixelRegions({**REGIONS["superpixels"], "slic": {**REGIONS["superpixels"]["slic"],
                                                                       "n_segments": n}}, 1.0).regions(image))
              for n in (16, 128)]
    assert counts[0] < counts[1]


def test_the_source_applies_the_area_gate():
    image = np.full((32, 32, 3), 100, np.uint8)  # featureless: Felzenszwalb makes one region of the whole tile
    params = {**REGIONS["superpixels"], "method": "felzenszwalb"}
    assert len(SuperpixelRegions(params, area_gate=1.0).regions(image)) == 1
    assert len(SuperpixelRegions(params, area_gate=0.3).regions(image)) == 0


def test_regions_need_an_rgb_uint8_image():
    with pytest.raises(ValueError, match="RGB uint8"):
        SuperpixelRegions(REGIONS["superpixels"], 1.0).regions(np.zeros((8, 8), np.uint8))


@pytest.mark.parametrize(("path", "value", "named"), [
    (("source",), "watershed", "sam_labeling.regions.source"),
    (("area_gate",), 0.0, "sam_labeling.regions.area_gate"),
    (("superpixels", "method"), "quickshift", "sam_labeling.regions.superpixels.method"),
    (("superpixels", "slic", "n_segments"), 0, "sam_labeling.regions.superpixels.slic.n_segments"),
    (("sam_auto", "pred_iou_thresh"), 1.5, "sam_labeling.regions.sam_auto.pred_iou_thresh"),
])
def test_build_region_source_names_a_bad_parameter(path, value, named):
    params = {**REGIONS, "superpixels": {**REGIONS["superpixels"], "slic": dict(REGIONS["superpixels"]["slic"])},
              "sam_auto": dict(REGIONS["sam_auto"])}
    target = params
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(UserInputError, match=named.replace(".", r"\.")):
        build_region_source(params)


# --------------------------------------------------------------------------- SAM's automatic masks


def _sam_auto(thresholds: float, gate: float) -> SamAutoRegions:
    params = {**REGIONS, "source": "sam_auto", "area_gate": gate,
              "sam_auto": {**REGIONS["sam_auto"], "points_per_side": 8, "pred_iou_thresh": thresholds,
                           "stability_score_thresh": thresholds}}
    return build_region_source(params, build_tiny_sam())


def test_sam_auto_with_a_random_sam_on_two_tiles():
    """A random SAM keeps no mask at SAM's default quality thresholds: an empty region set, not an
    error. With the thresholds at 0 it keeps masks, each a region of the tile; the area gate then
    drops the ones larger than sigma."""
    tiles = list(toy_tiles(2)[0].values())
    for image in tiles:
        assert len(_sam_auto(0.88, 1.0).regions(image)) == 0
        everything = _sam_auto(0.0, 1.0).regions(image)
        assert len(everything) >= 1 and everything.shape == image.shape[:2]
        assert everything.masks().any(axis=(1, 2)).all()
        gated = _sam_auto(0.0, 0.3).regions(image)
        assert sorted(gated.areas().tolist()) == sorted(a for a in everything.areas().tolist() if a <= 0.3 * image[..., 0].size)


def test_sam_auto_needs_a_model():
    with pytest.raises(ValueError, match="needs a loaded SAM"):
        build_region_source({**REGIONS, "source": "sam_auto"})


# --------------------------------------------------------------------------- the factory


def test_the_factory_builds_superpixels_without_sam():
    params = {**SAM_LABELING, "segmenter": "regions"}
    assert not uses_sam(params)
    assert isinstance(build_segmenter(params, "cpu"), SuperpixelRegions)


def test_the_factory_builds_sam_auto_from_the_checkpoint(tmp_path, monkeypatch):
    model_type = register_tiny_sam(monkeypatch)
    checkpoint = tmp_path / "tiny.pth"
    weights = build_tiny_sam(seed=3).state_dict()
    torch.save(weights, checkpoint)
    params = {**SAM_LABELING, "segmenter": "regions", "regions": {**REGIONS, "source": "sam_auto"},
              "sam": {**SAM_LABELING["sam"], "checkpoint": str(checkpoint), "model_type": model_type}}
    assert uses_sam(params)
    source = build_segmenter(params, "cpu")
    assert isinstance(source, SamAutoRegions)
    loaded = source.generator.predictor.model.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in weights.items())  # the file's weights


def test_the_factory_names_a_missing_checkpoint_for_sam_auto(tmp_path):
    params = {**SAM_LABELING, "segmenter": "regions", "regions": {**REGIONS, "source": "sam_auto"},
              "sam": {**SAM_LABELING["sam"], "checkpoint": str(tmp_path / "absent.pth")}}
    with pytest.raises(UserInputError, match="sam_labeling.sam.checkpoint"):
        build_segmenter(params, "cpu")
