import numpy as np
import pytest
from toy_tiles import PROMPT_GENERATION, SAM_LABELING, SIZE, toy_tiles

from wsss_project.evaluation.metrics import binary_mask_metrics
from wsss_project.pipelines.prompt_generation.nodes import generate_prompts
from wsss_project.pipelines.sam_labeling.nodes import (
    build_segmenter,
    label_tiles,
    merge_class_masks,
)
from wsss_project.segmenters import factory


def _label(params=SAM_LABELING, threshold=120, index=None):
    tiles, masks, cams, toy_index = toy_tiles()
    index = toy_index if index is None else index
    pg = {**PROMPT_GENERATION, "threshold": threshold}
    prompts = generate_prompts(cams, index, pg, ["landslide"])
    return label_tiles(build_segmenter(params, "cpu"), tiles, cams, prompts, index, params, pg, ["landslide"]), masks, index


def test_grabcut_pseudo_masks_find_the_landslides():
    pseudo, masks, index = _label()
    for tile in index.itertuples():
        if tile.landslide:
            assert binary_mask_metrics(pseudo[tile.tile_id], masks[tile.tile_id])["iou"] > 0.8
        else:
            assert not pseudo[tile.tile_id].any()  # negative tiles are all background


def test_positive_tile_without_prompts_is_ignored_or_background():
    pseudo, _, index = _label(threshold=255)  # no CAM pixel can exceed 255
    positive = index.loc[index.landslide == 1, "tile_id"]
    assert all((pseudo[t] == 255).all() for t in positive)
    pseudo, _, _ = _label({**SAM_LABELING, "unprompted_positive": "background"}, threshold=255)
    assert all((pseudo[t] == 0).all() for t in positive)


def test_labelling_happens_in_the_node_and_returns_arrays():
    tiles, _, cams, index = toy_tiles()
    loaded = []
    loaders = {k: (lambda v=v, k=k: loaded.append(k) or v) for k, v in tiles.items()}  # as PartitionedDataset gives
    prompts = generate_prompts(cams, index, PROMPT_GENERATION, ["landslide"])
    segmenter = build_segmenter(SAM_LABELING, "cpu")
    pseudo = label_tiles(segmenter, loaders, cams, prompts, index, SAM_LABELING, PROMPT_GENERATION, ["landslide"])
    assert sorted(loaded) == sorted(tiles)  # every tile was read (and labelled) during the call, once
    assert set(pseudo) == set(tiles)
    for mask in pseudo.values():
        assert isinstance(mask, np.ndarray) and mask.dtype == np.uint8 and mask.shape == (SIZE, SIZE)


def test_label_tiles_uses_the_segmenter_it_is_given(monkeypatch):
    segmenter = build_segmenter(SAM_LABELING, "cpu")

    def no_second_model(*args):
        raise AssertionError("label_tiles built a segmenter of its own")

    monkeypatch.setattr(factory, "build_segmenter", no_second_model)
    tiles, _, cams, index = toy_tiles()
    prompts = generate_prompts(cams, index, PROMPT_GENERATION, ["landslide"])
    for threshold in (90, 120):  # every T labels with the same, already built model
        pg = {**PROMPT_GENERATION, "threshold": threshold}
        assert label_tiles(segmenter, tiles, cams, prompts, index, SAM_LABELING, pg, ["landslide"])


def test_overlapping_classes_go_to_the_higher_score():
    a = np.zeros((1, 4, 4), bool)
    a[0, :, :3] = True
    b = np.zeros((1, 4, 4), bool)
    b[0, :, 1:] = True
    merged = merge_class_masks(4, 4, [(1, a, np.array([0.4])), (2, b, np.array([0.9]))])
    assert merged[:, 0].tolist() == [1] * 4 and (merged[:, 1:] == 2).all()
    assert merged.dtype == np.uint8


def test_cam_guided_grabcut_prior_threshold_follows_t_when_unset():
    guided = {**SAM_LABELING, "grabcut": {**SAM_LABELING["grabcut"], "cam_guided": True, "prior_threshold": None}}
    segmenter = build_segmenter(guided, "cpu")
    assert segmenter.at_threshold(90).params["prior_threshold"] == 90
    assert segmenter.at_threshold(140).params["prior_threshold"] == 140
    assert segmenter.params["prior_threshold"] is None  # the shared segmenter itself is left as built
    fixed = build_segmenter({**guided, "grabcut": {**guided["grabcut"], "prior_threshold": 30}}, "cpu")
    assert fixed.at_threshold(90).params["prior_threshold"] == 30
    # The T reaches the masks: a prior threshold above every CAM value leaves GrabCut no probable
    # foreground inside the boxes, so the positive tiles' masks differ between T = 50 and T = 254.
    low, _, index = _label(guided, threshold=50)
    high, _, _ = _label({**guided, "grabcut": {**guided["grabcut"], "prior_threshold": 254}}, threshold=50)
    positive = index.loc[index.landslide == 1, "tile_id"]
    assert any(not np.array_equal(low[t], high[t]) for t in positive)


def test_bad_unprompted_policy_names_the_parameter():
    with pytest.raises(ValueError, match="sam_labeling.unprompted_positive"):
        _label({**SAM_LABELING, "unprompted_positive": "guess"})


def test_pixels_outside_the_scene_are_ignored_in_every_pseudo_mask():
    index = toy_tiles()[3]
    # Border tiles: only the top-left 40x50 lies inside the scene, the rest is padding.
    index["height"], index["width"] = 40, 50
    labelled, _, _ = _label(index=index)
    for tile in index.itertuples():
        pseudo = labelled[tile.tile_id]
        assert (pseudo[40:] == 255).all() and (pseudo[:, 50:] == 255).all()
        inside = pseudo[:40, :50]
        assert not (inside == 255).any()  # prompted or negative: the scene part keeps its labels
        assert (inside == 1).any() == bool(tile.landslide)
