"""PRC's IOS on the final predictions: each predicted component judged against CAM > T."""

from __future__ import annotations

import numpy as np
import pytest

from wsss_project.contracts import BACKGROUND_INDEX, IGNORE_INDEX
from wsss_project.segmenters.prediction_refinement import RefinementCounts, refine_by_ios

T = 100
ABOVE = T + 1


def _two_components() -> tuple[np.ndarray, np.ndarray]:
    """Two 20-px components (rows 1..2 and 6..7, columns 0..9) of class 1; the CAM is above T on
    the first 4 columns of the first (IOS 0.4) and the first 6 columns of the second (IOS 0.6)."""
    prediction = np.zeros((10, 10), np.uint8)
    prediction[1:3] = 1
    prediction[6:8] = 1
    heatmap = np.zeros((1, 10, 10), np.uint8)
    heatmap[0, 1:3, :4] = ABOVE
    heatmap[0, 6:8, :6] = ABOVE
    return prediction, heatmap


def test_a_component_at_ios_0_4_is_removed_and_one_at_0_6_kept_with_min_overlap_0_5():
    prediction, heatmap = _two_components()
    refined, counts = refine_by_ios(prediction, heatmap, T, 0.5)
    assert (refined[1:3] == BACKGROUND_INDEX).all()  # IOS 0.4: set to background ...
    assert not (refined == IGNORE_INDEX).any()  # ... never to ignore, which a 0/255 prediction reads as landslide
    assert (refined[6:8] == 1).all()  # IOS 0.6: kept whole, also where the CAM is below T
    assert counts == RefinementCounts(kept=1, removed=1, pixels_removed=20)
    assert (prediction[1:3] == 1).all(), "the input prediction is not modified"


@pytest.mark.parametrize(("min_overlap", "kept_rows"), [(0.0, 2), (0.4, 2), (0.41, 1), (0.6, 1), (0.61, 0)])
def test_the_threshold_is_ios_at_least_min_overlap(min_overlap, kept_rows):
    prediction, heatmap = _two_components()
    refined, counts = refine_by_ios(prediction, heatmap, T, min_overlap)
    assert counts.kept == kept_rows and counts.removed == 2 - kept_rows
    assert int((refined == 1).sum()) == 20 * kept_rows


def test_the_cam_region_is_strictly_above_t():
    prediction, heatmap = _two_components()
    at_t = np.where(heatmap > 0, T, 0).astype(np.uint8)
    refined, counts = refine_by_ios(prediction, at_t, T, 0.1)
    assert counts.removed == 2 and not refined.any()


def test_components_are_judged_one_by_one_even_inside_each_others_box():
    # A ring (outside the CAM region) around a blob (inside it): the blob lies in the ring's bounding
    # box, so a rule that judged the box rather than the ring's own pixels would mix the two.
    prediction = np.zeros((12, 12), np.uint8)
    prediction[1:11, 1:11] = 1
    prediction[2:10, 2:10] = 0
    prediction[4:8, 4:8] = 1
    heatmap = np.zeros((1, 12, 12), np.uint8)
    heatmap[0, 3:9, 3:9] = ABOVE
    refined, counts = refine_by_ios(prediction, heatmap, T, 0.5)
    assert counts == RefinementCounts(kept=1, removed=1, pixels_removed=36)
    assert refined[4:8, 4:8].all() and int(refined.sum()) == 16


def test_diagonal_neighbours_are_one_component():
    # Two 2x2 squares touching at a corner: one 8-connected component with IOS 4/8 = 0.5.
    prediction = np.zeros((6, 6), np.uint8)
    prediction[0:2, 0:2] = 1
    prediction[2:4, 2:4] = 1
    heatmap = np.zeros((1, 6, 6), np.uint8)
    heatmap[0, 0:2, 0:2] = ABOVE
    refined, counts = refine_by_ios(prediction, heatmap, T, 0.5)
    assert counts == RefinementCounts(kept=1, removed=0, pixels_removed=0)
    assert (refined == prediction).all()


def test_each_class_is_judged_against_its_own_heatmap():
    prediction = np.zeros((4, 8), np.uint8)
    prediction[:, :4] = 1
    prediction[:, 4:] = 2
    heatmaps = np.zeros((2, 4, 8), np.uint8)
    heatmaps[0, :, :] = ABOVE  # class 1 fires everywhere ...
    heatmaps[1, :, :4] = ABOVE  # ... class 2 only where class 1 was predicted
    refined, counts = refine_by_ios(prediction, heatmaps, T, 0.5)
    assert (refined[:, :4] == 1).all() and (refined[:, 4:] == BACKGROUND_INDEX).all()
    assert counts == RefinementCounts(kept=1, removed=1, pixels_removed=16)


def test_nothing_predicted_is_nothing_refined():
    refined, counts = refine_by_ios(np.zeros((5, 5), np.uint8), np.zeros((1, 5, 5), np.uint8), T, 0.5)
    assert counts == RefinementCounts() and not refined.any()


def test_mismatched_shapes_and_classes_without_heatmap_are_errors():
    prediction, heatmap = _two_components()
    with pytest.raises(ValueError, match="heatmaps must be"):
        refine_by_ios(prediction, heatmap[:, :5], T, 0.5)
    with pytest.raises(ValueError, match="class index 2 has no heatmap"):
        refine_by_ios(prediction * 2, heatmap, T, 0.5)
