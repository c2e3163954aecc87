"""Adaptive prompt generation against hand-computed boxes, centroids and areas."""

import math

import numpy as np
import pandas as pd
import pytest

from wsss_project.geometry.prompts import (
    PROMPT_COLUMNS,
    Prompt,
    adaptive_prompts,
    prompts_table,
)

T = 120
HOT = 200


def _heatmap(shape=(32, 32)):
    return np.zeros(shape, dtype=np.uint8)


def test_two_separate_blobs_give_two_prompts_with_their_boxes():
    heatmap = _heatmap()
    heatmap[2:6, 3:8] = HOT  # rows 2..5, cols 3..7
    heatmap[20:30, 10:14] = HOT  # rows 20..29, cols 10..13
    prompts = adaptive_prompts(heatmap, T)
    assert [(p.x0, p.y0, p.w, p.h) for p in prompts] == [(3, 2, 5, 4), (10, 20, 4, 10)]
    # contourArea runs through pixel centres: (w - 1) * (h - 1) for a filled rectangle
    assert [p.area for p in prompts] == [4 * 3, 3 * 9]


def test_centroid_of_filled_square_is_its_centre():
    heatmap = _heatmap()
    heatmap[10:17, 4:11] = HOT  # 7 x 7 square, centre pixel (7, 13)
    (prompt,) = adaptive_prompts(heatmap, T)
    assert prompt.has_point
    assert prompt.px == pytest.approx(7.0)
    assert prompt.py == pytest.approx(13.0)


def test_threshold_is_strict():
    heatmap = _heatmap()
    heatmap[2:8, 2:8] = T  # exactly at T: excluded by eq. 2
    heatmap[20:26, 20:26] = T + 1  # just above: kept
    prompts = adaptive_prompts(heatmap, T)
    assert [(p.x0, p.y0) for p in prompts] == [(20, 20)]
    assert adaptive_prompts(heatmap, T + 1) == []
    assert len(adaptive_prompts(heatmap, T - 1)) == 2


def test_zero_area_contours_give_box_but_no_point():
    heatmap = _heatmap()
    heatmap[5, 7] = HOT  # one pixel
    heatmap[15, 3:12] = HOT  # one-pixel-wide horizontal line
    heatmap[20:28, 25] = HOT  # one-pixel-wide vertical line
    prompts = adaptive_prompts(heatmap, T)
    assert [(p.x0, p.y0, p.w, p.h) for p in prompts] == [
        (7, 5, 1, 1),
        (3, 15, 9, 1),
        (25, 20, 1, 8),
    ]
    for prompt in prompts:
        assert prompt.area == 0.0
        assert math.isnan(prompt.px) and math.isnan(prompt.py)
        assert not prompt.has_point


def test_min_contour_area_removes_small_blobs():
    heatmap = _heatmap()
    heatmap[2:4, 2:4] = HOT  # area 1
    heatmap[10:20, 10:20] = HOT  # area 81
    assert len(adaptive_prompts(heatmap, T)) == 2
    (big,) = adaptive_prompts(heatmap, T, min_contour_area=10)
    assert (big.x0, big.y0, big.area) == (10, 10, 81.0)


def test_min_box_side_removes_thin_blobs():
    heatmap = _heatmap()
    heatmap[2:4, 2:30] = HOT  # 28 x 2 strip
    heatmap[10:20, 10:20] = HOT
    (kept,) = adaptive_prompts(heatmap, T, min_box_side=3)
    assert (kept.w, kept.h) == (10, 10)


def test_external_retrieval_ignores_holes_list_does_not():
    heatmap = _heatmap()
    heatmap[4:20, 4:20] = HOT
    heatmap[8:16, 8:16] = 0  # a ring
    assert len(adaptive_prompts(heatmap, T)) == 1
    assert len(adaptive_prompts(heatmap, T, retrieval="list")) == 2


def _c_shape():
    heatmap = _heatmap()
    heatmap[4:28, 4:8] = HOT  # spine
    heatmap[4:8, 4:28] = HOT  # top arm
    heatmap[24:28, 4:28] = HOT  # bottom arm
    return heatmap


def test_centroid_of_non_convex_contour_may_fall_outside_and_is_kept_by_default():
    heatmap = _c_shape()
    (prompt,) = adaptive_prompts(heatmap, T)
    col, row = round(prompt.px), round(prompt.py)
    assert heatmap[row, col] == 0  # the paper's point lies in the gap of the "C"


def test_snap_points_inside_moves_point_onto_the_blob():
    heatmap = _c_shape()
    (kept,) = adaptive_prompts(heatmap, T)
    (snapped,) = adaptive_prompts(heatmap, T, snap_points_inside=True)
    assert heatmap[int(snapped.py), int(snapped.px)] > T
    assert (snapped.x0, snapped.y0, snapped.w, snapped.h) == (kept.x0, kept.y0, kept.w, kept.h)
    # the nearest blob pixel to the centroid, by brute force
    rows, cols = np.nonzero(heatmap > T)
    distances = np.hypot(cols - kept.px, rows - kept.py)
    assert math.hypot(snapped.px - kept.px, snapped.py - kept.py) == pytest.approx(distances.min())


def test_snap_keeps_points_already_inside():
    heatmap = _heatmap()
    heatmap[10:17, 4:11] = HOT
    assert adaptive_prompts(heatmap, T, snap_points_inside=True) == adaptive_prompts(heatmap, T)


@pytest.mark.parametrize("threshold", [-1, 256, 120.0, True, "120"])
def test_bad_threshold_names_the_parameter(threshold):
    with pytest.raises(ValueError, match="prompt_generation.threshold"):
        adaptive_prompts(_heatmap(), threshold)


@pytest.mark.parametrize(
    "heatmap",
    [np.zeros((4, 4), dtype=np.float32), np.zeros((4, 4, 3), dtype=np.uint8), [[0, 1]]],
)
def test_heatmap_must_be_2d_uint8(heatmap):
    with pytest.raises(ValueError, match="2-D uint8"):
        adaptive_prompts(heatmap, T)


def test_unknown_retrieval_is_rejected():
    with pytest.raises(ValueError, match="retrieval"):
        adaptive_prompts(_heatmap(), T, retrieval="outer")


def test_numpy_integer_threshold_is_accepted():
    heatmap = _heatmap()
    heatmap[2:6, 2:6] = HOT
    assert len(adaptive_prompts(heatmap, np.uint8(T))) == 1


def test_prompts_table_columns_dtypes_and_ids():
    first = Prompt(x0=1, y0=2, w=3, h=4, px=2.0, py=3.5, area=6.0)
    second = Prompt(x0=5, y0=6, w=1, h=1, px=math.nan, py=math.nan, area=0.0)
    table = prompts_table(
        [("scene__0_0", 1, [first, second]), ("scene__0_0", 2, [first]), ("scene__0_256", 1, [])]
    )
    assert list(table.columns) == list(PROMPT_COLUMNS)
    assert table.dtypes.astype(str).to_dict() == PROMPT_COLUMNS
    assert table["prompt_id"].tolist() == [0, 1, 0]
    assert table["class_id"].tolist() == [1, 1, 2]
    assert table.loc[0, ["x0", "y0", "w", "h"]].tolist() == [1, 2, 3, 4]
    assert np.isnan(table.loc[1, "px"])


def test_prompts_table_numbers_on_across_records_of_one_tile_and_class():
    prompt = Prompt(x0=0, y0=0, w=2, h=2, px=0.5, py=0.5, area=1.0)
    table = prompts_table([("t", 1, [prompt]), ("t", 1, [prompt, prompt])])
    assert table["prompt_id"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("records", [[], [("scene__0_0", 1, [])]])
def test_empty_prompts_table_keeps_columns_and_dtypes(records):
    table = prompts_table(records)
    assert table.empty
    assert list(table.columns) == list(PROMPT_COLUMNS)
    assert table.dtypes.astype(str).to_dict() == PROMPT_COLUMNS


def test_table_round_trips_adaptive_prompts():
    heatmap = _heatmap()
    heatmap[2:6, 3:8] = HOT
    heatmap[20:30, 10:14] = HOT
    prompts = adaptive_prompts(heatmap, T)
    table = prompts_table([("scene__0_0", 1, prompts)])
    rebuilt = [
        Prompt(**row)
        for row in table.drop(columns=["tile_id", "class_id", "prompt_id"]).to_dict("records")
    ]
    assert rebuilt == prompts
    assert isinstance(table, pd.DataFrame)
