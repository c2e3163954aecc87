"""Stitching a scene from its tile partitions (tile_data.stitch_scene), the one helper evaluation and
segmentation_training share."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import pytest

from wsss_project.contracts import cam_key
from wsss_project.errors import UserInputError
from wsss_project.tile_data import stitch_scene

TILE = 4


def _scene_tiles(windows: list[tuple[int, int, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"tile_id": f"s_{r}_{c}", "row": r, "col": c, "height": h, "width": w} for r, c, h, w in windows]
    )


def test_each_tile_lands_at_its_window_and_padding_is_dropped() -> None:
    # A 4 x 6 scene: one full tile and a border tile whose valid part is 4 x 2 (the rest is padding).
    tiles = _scene_tiles([(0, 0, 4, 4), (0, 4, 4, 2)])
    parts = {"s_0_0": np.full((TILE, TILE), 7, np.uint8), "s_0_4": np.arange(16, dtype=np.uint8).reshape(TILE, TILE)}
    scene = stitch_scene(parts, tiles, 4, 6, "tile_masks")
    assert scene.dtype == np.uint8 and scene.shape == (4, 6)
    assert (scene[:, :4] == 7).all()
    np.testing.assert_array_equal(scene[:, 4:], parts["s_0_4"][:, :2])


def test_partitions_are_read_under_key_of() -> None:
    tiles = _scene_tiles([(0, 0, 4, 4)])
    parts = {cam_key("landslide", "s_0_0"): lambda: np.full((TILE, TILE), 200, np.uint8)}
    scene = stitch_scene(parts, tiles, 4, 4, "cams", key_of=partial(cam_key, "landslide"))
    assert (scene == 200).all()


def test_a_pixel_no_tile_covers_is_an_error_naming_the_dataset() -> None:
    tiles = _scene_tiles([(0, 0, 4, 4)])
    with pytest.raises(UserInputError, match="`tile_masks`"):
        stitch_scene({"s_0_0": np.zeros((TILE, TILE), np.uint8)}, tiles, 4, 8, "tile_masks")
