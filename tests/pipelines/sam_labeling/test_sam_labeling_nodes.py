import numpy as np
import pytest
from toy_tiles import PROMPT_GENERATION, SAM_LABELING, toy_tiles

from wsss_project.evaluation.metrics import binary_mask_metrics
from wsss_project.pipelines.prompt_generation.nodes import generate_prompts
from wsss_project.pipelines.sam_labeling.nodes import (
    label_tiles,
    merge_class_masks,
    resolve_segmenter_params,
)


def _label(params=SAM_LABELING, threshold=120):
    tiles, masks, cams, index = toy_tiles()
    pg = {**PROMPT_GENERATION, "threshold": threshold}
    prompts = generate_prompts(cams, index, pg, ["landslide"])
    lazy = label_tiles(tiles, cams, prompts, index, params, pg, ["landslide"], "cpu")
    return {tile_id: compute() for tile_id, compute in lazy.items()}, masks, index


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


def test_outputs_are_lazy_until_saved():
    tiles, _, cams, index = toy_tiles()
    calls = []
    counting = {k: (lambda v=v, k=k: calls.append(k) or v) for k, v in tiles.items()}
    prompts = generate_prompts(cams, index, PROMPT_GENERATION, ["landslide"])
    lazy = label_tiles(counting, cams, prompts, index, SAM_LABELING, PROMPT_GENERATION, ["landslide"], "cpu")
    assert calls == [] and all(callable(v) for v in lazy.values())
    next(iter(lazy.values()))()
    assert len(calls) == 1


def test_overlapping_classes_go_to_the_higher_score():
    a = np.zeros((1, 4, 4), bool)
    a[0, :, :3] = True
    b = np.zeros((1, 4, 4), bool)
    b[0, :, 1:] = True
    merged = merge_class_masks(4, 4, [(1, a, np.array([0.4])), (2, b, np.array([0.9]))])
    assert merged[:, 0].tolist() == [1] * 4 and (merged[:, 1:] == 2).all()
    assert merged.dtype == np.uint8


def test_grabcut_prior_threshold_follows_t_when_unset():
    assert resolve_segmenter_params(SAM_LABELING, 90)["grabcut"]["prior_threshold"] == 90
    fixed = {**SAM_LABELING, "grabcut": {**SAM_LABELING["grabcut"], "prior_threshold": 30}}
    assert resolve_segmenter_params(fixed, 90)["grabcut"]["prior_threshold"] == 30


def test_bad_unprompted_policy_names_the_parameter():
    with pytest.raises(ValueError, match="sam_labeling.unprompted_positive"):
        _label({**SAM_LABELING, "unprompted_positive": "guess"})


def test_pixels_outside_the_scene_are_ignored_in_every_pseudo_mask():
    tiles, masks, cams, index = toy_tiles()
    # Border tiles: only the top-left 40x50 lies inside the scene, the rest is padding.
    index["height"], index["width"] = 40, 50
    prompts = generate_prompts(cams, index, PROMPT_GENERATION, ["landslide"])
    lazy = label_tiles(tiles, cams, prompts, index, SAM_LABELING, PROMPT_GENERATION, ["landslide"], "cpu")
    for tile in index.itertuples():
        pseudo = lazy[tile.tile_id]()
        assert (pseudo[40:] == 255).all() and (pseudo[:, 50:] == 255).all()
        inside = pseudo[:40, :50]
        assert not (inside == 255).any()  # prompted or negative: the scene part keeps its labels
        assert (inside == 1).any() == bool(tile.landslide)
