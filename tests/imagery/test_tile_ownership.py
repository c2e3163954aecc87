"""Owned regions of overlapping tiles: each scene pixel has exactly one owning tile."""

import numpy as np
import pytest

from wsss_project.imagery.tiling import TileWindow, mark_outside_scene, owned_masks, tile_windows


def _coverage(windows, masks, height, width):
    count = np.zeros((height, width), int)
    for w, owned in zip(windows, masks, strict=True):
        assert owned.shape == (w.height, w.width)
        count[w.row : w.row + w.height, w.col : w.col + w.width] += owned
    return count


@pytest.mark.parametrize("height,width", [(512, 512), (640, 533), (256, 256), (100, 300), (1024, 700)])
@pytest.mark.parametrize("overlap", [0.0, 0.4, 0.75])
def test_owned_regions_partition_the_scene_exactly(height, width, overlap):
    windows = tile_windows(height, width, 256, overlap)
    masks = owned_masks(windows, height, width)
    assert (_coverage(windows, masks, height, width) == 1).all()
    assert sum(int(m.sum()) for m in masks) == height * width


def test_without_overlap_each_tile_owns_its_whole_valid_window():
    windows = tile_windows(300, 300, 256, 0.0)
    assert all(m.all() for m in owned_masks(windows, 300, 300))


def test_a_pixel_goes_to_the_nearest_centre_and_ties_to_the_first_tile():
    # Two 1x4 windows of a 1x5 scene, centres at 2.0 and 3.0: column 2 (centre 2.5) is a tie.
    windows = [TileWindow(0, 0, 1, 4), TileWindow(0, 1, 1, 4)]
    first, second = owned_masks(windows, 1, 5)
    assert first.tolist() == [[True, True, True, False]] and second.tolist() == [[False, False, True, True]]
    second, first = owned_masks(windows[::-1], 1, 5)
    assert first.tolist() == [[True, True, False, False]] and second.tolist() == [[False, True, True, True]]


def test_gaps_and_windows_outside_the_scene_are_errors():
    with pytest.raises(ValueError, match="uncovered"):
        owned_masks([TileWindow(0, 0, 4, 4)], 4, 6)
    with pytest.raises(ValueError, match="outside"):
        owned_masks([TileWindow(0, 4, 4, 4)], 4, 6)


def test_outside_scene_pixels_are_marked_and_the_input_is_kept():
    mask = np.zeros((4, 4), np.uint8)
    marked = mark_outside_scene(mask, TileWindow(0, 0, 3, 2), 255)
    assert (marked[:3, :2] == 0).all() and (marked[3] == 255).all() and (marked[:, 2:] == 255).all()
    assert not mask.any()
