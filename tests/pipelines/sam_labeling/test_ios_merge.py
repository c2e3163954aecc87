"""sam_labeling with `merge: ios`, `min_confidence` and the masks table, on the toy tiles (GrabCut)
and with a tiny random-weight SAM."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from toy_tiles import PROMPT_GENERATION, SAM_LABELING, SIZE, toy_tiles

from wsss_project.contracts import IGNORE_INDEX
from wsss_project.pipelines.prompt_generation.nodes import generate_prompts
from wsss_project.pipelines.sam_labeling.nodes import (
    TileLabeler,
    build_segmenter,
    label_tiles,
    label_tiles_with_table,
)
from wsss_project.segmenters.mask_rules import TABLE_COLUMNS
from wsss_project.segmenters.sam import SamSegmenter

CLASSES = ["landslide"]


def _run(params=SAM_LABELING, moved_cams=False, segmenter=None):
    """(pseudo-masks, masks table, tile index); moved_cams (True, or the tile ids): prompts from the
    true CAMs, IOS against CAMs moved to the opposite corner, so the segmenter's mask of that tile
    does not agree with the CAM it is judged by."""
    tiles, _, cams, index = toy_tiles()
    prompts = generate_prompts(cams, index, PROMPT_GENERATION, CLASSES)
    moved = set(index.tile_id) if moved_cams is True else set(moved_cams or ())
    cams = {key: np.roll(cam, (SIZE // 2, SIZE // 2), axis=(0, 1)) if key.split("/")[1] in moved else cam
            for key, cam in cams.items()}
    segmenter = segmenter or build_segmenter(params, "cpu")
    masks, table = label_tiles_with_table(segmenter, tiles, cams, prompts, index, params, PROMPT_GENERATION, CLASSES)
    return masks, table, index


def _positive(index: pd.DataFrame) -> list[str]:
    return index.loc[index.landslide == 1, "tile_id"].tolist()


def test_defaults_keep_every_mask_and_label_as_without_a_rule():
    tiles, _, cams, index = toy_tiles()
    prompts = generate_prompts(cams, index, PROMPT_GENERATION, CLASSES)
    segmenter = build_segmenter(SAM_LABELING, "cpu").at_threshold(PROMPT_GENERATION["threshold"])
    masks, table, _ = _run()
    assert table["kept"].all() and (table["rejected_by"] == "").all()
    plain = TileLabeler(segmenter, prompts, "point_box", "ignore", None)  # the labelling before IOS existed
    for tile in index.itertuples():
        positive = [(1, cams[f"landslide/{tile.tile_id}"])] if tile.landslide else []
        expected = plain.label(tile.tile_id, tiles[tile.tile_id], positive, len(index), (SIZE, SIZE))
        np.testing.assert_array_equal(masks[tile.tile_id], expected)
    # label_tiles (the masks alone) gives the same masks
    again = label_tiles(build_segmenter(SAM_LABELING, "cpu"), tiles, cams, prompts, index, SAM_LABELING,
                        PROMPT_GENERATION, CLASSES)
    assert all(np.array_equal(again[t], masks[t]) for t in masks)


def test_ios_turns_masks_that_disagree_with_the_cam_into_ignore_not_background():
    segmenter_masks, _, index = _run(moved_cams=True)  # merge: segmenter, same masks
    masks, table, _ = _run({**SAM_LABELING, "merge": "ios"}, moved_cams=True)
    assert len(table) and not table["kept"].any() and set(table["rejected_by"]) == {"ios"}
    for tile_id in _positive(index):
        was_landslide = segmenter_masks[tile_id] == 1
        assert was_landslide.any()
        assert (masks[tile_id][was_landslide] == IGNORE_INDEX).all()  # ignore, not background
        assert (masks[tile_id][~was_landslide] == 0).all()  # the rest of a prompted tile stays background
    for tile_id in set(masks) - set(_positive(index)):
        assert not masks[tile_id].any()  # negative tiles: all background, as before


def test_ios_keeps_masks_that_agree_with_the_cam():
    default, _, index = _run()
    masks, table, _ = _run({**SAM_LABELING, "merge": "ios", "ios": {"min_overlap": 0.0}}, moved_cams=True)
    assert table["kept"].all()  # every IOS >= 0
    kept, _, _ = _run({**SAM_LABELING, "merge": "ios"})  # the true CAMs: GrabCut's squares agree
    assert (table["ios"] == 0).any()
    for tile_id in masks:
        np.testing.assert_array_equal(masks[tile_id], default[tile_id])
        np.testing.assert_array_equal(kept[tile_id], default[tile_id])


def test_the_table_has_one_row_per_mask_and_its_rows_match_the_masks():
    masks, table, index = _run({**SAM_LABELING, "merge": "ios", "ios": {"min_overlap": 0.9}}, moved_cams=True)
    assert list(table.columns) == list(TABLE_COLUMNS)
    prompts = generate_prompts(toy_tiles()[2], index, PROMPT_GENERATION, CLASSES)
    assert sorted(zip(table.tile_id, table.mask_index, strict=True)) == sorted(
        zip(prompts.tile_id, prompts.prompt_id, strict=True))
    assert (table["class_name"] == "landslide").all() and (table["confidence_name"] == "ios").all()
    assert table["predicted_iou"].isna().all() and table["stability_score"].isna().all()  # GrabCut measures neither
    # One square landslide per positive toy tile, one prompt: its row's area is what the mask shows.
    for row in table.itertuples():
        shown = masks[row.tile_id] == (1 if row.kept else IGNORE_INDEX)
        assert shown.sum() == row.area > 0


def test_min_confidence_on_grabcut_reads_ios_and_turns_low_masks_into_ignore():
    moved = ["scene1__0_0"]  # its mask lies outside its (moved) CAM region: IOS 0; scene3's agrees
    masks, table, _ = _run({**SAM_LABELING, "min_confidence": 0.5}, moved_cams=moved)
    low = table["ios"] < 0.5
    assert table.loc[low, "tile_id"].tolist() == moved
    assert table.loc[low, "rejected_by"].eq("min_confidence").all() and table.loc[~low, "kept"].all()
    for row in table[low].itertuples():
        assert (masks[row.tile_id] == IGNORE_INDEX).sum() == row.area


def test_rejected_masks_are_logged_with_their_reason(caplog):
    caplog.set_level("INFO")
    _run({**SAM_LABELING, "merge": "ios"}, moved_cams=True)
    assert "Masks: 0 of 2 kept, 2 turned to ignore (2 by ios, 0 by min_confidence)" in caplog.text


# --------------------------------------------------------------------------- SAM (tiny random weights)


@pytest.fixture(scope="module")
def tiny_sam() -> SamSegmenter:
    from segmenters.test_sam_segmenter import build_tiny_sam

    return SamSegmenter(build_tiny_sam(), "cpu", {"multimask_output": "auto", "stability_score_offset": 1.0})


def test_sam_masks_carry_the_predictors_confidences_and_min_confidence_reads_the_stability_score(tiny_sam):
    sam_params = {**SAM_LABELING, "segmenter": "sam"}
    _, table, _ = _run(sam_params, segmenter=tiny_sam)
    assert len(table) and (table["confidence_name"] == "stability_score").all()
    assert table["stability_score"].between(0, 1).all() and table["predicted_iou"].notna().all()
    np.testing.assert_array_equal(table["confidence"], table["stability_score"])
    np.testing.assert_array_equal(table["score"], table["predicted_iou"])  # SAM ranks masks by its IoU head

    cut = float(table["stability_score"].max()) + 1e-6  # above every mask: all rejected
    masks, strict, _ = _run({**sam_params, "min_confidence": min(cut, 1.0)}, segmenter=tiny_sam)
    rejected = strict["stability_score"] < min(cut, 1.0)
    assert rejected.any() and strict.loc[rejected, "rejected_by"].eq("min_confidence").all()
    by_iou, _, _ = _run({**sam_params, "min_confidence": 0.0, "confidence": "predicted_iou"}, segmenter=tiny_sam)
    assert by_iou  # the IoU head is a valid choice for SAM
