import numpy as np
import pytest

from wsss_project.imagery.tiling import (
    iter_tiles,
    stitch_mean,
    tile_origins,
    tile_stride,
    tile_windows,
)


@pytest.mark.parametrize("height,width", [(512, 512), (640, 533), (256, 256), (100, 300), (1024, 700)])
@pytest.mark.parametrize("overlap", [0.0, 0.4])
def test_stitching_tiles_gives_back_the_scene_exactly(height, width, overlap):
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    pieces = list(iter_tiles(scene, 256, overlap))
    assert all(tile.shape == (256, 256, 3) for _, tile in pieces)
    stitched = stitch_mean(pieces, height, width)
    np.testing.assert_array_equal(stitched.astype(np.uint8), scene)


def test_windows_cover_every_pixel_and_test_tiles_do_not_overlap():
    windows = tile_windows(640, 600, 256, 0.0)
    cover = np.zeros((640, 600), int)
    for w in windows:
        cover[w.row : w.row + w.height, w.col : w.col + w.width] += 1
    assert (cover == 1).all()


def test_overlap_of_forty_percent_gives_the_apsam_stride():
    assert tile_stride(256, 0.4) == 154
    assert tile_origins(512, 256, 154) == [0, 154, 308]


def test_padding_with_ignore_value_marks_border():
    mask = np.zeros((300, 300), np.uint8)
    pieces = dict(((w.row, w.col), t) for w, t in iter_tiles(mask, 256, 0.0, pad_value=255))
    corner = pieces[(256, 256)]
    assert (corner[:44, :44] == 0).all() and (corner[44:, :] == 255).all() and (corner[:, 44:] == 255).all()


def test_uncovered_pixels_are_nan_not_zero():
    windows = tile_windows(512, 512, 256, 0.0)[:1]
    stitched = stitch_mean([(windows[0], np.ones((256, 256), np.float32))], 512, 512)
    assert np.isnan(stitched[300, 300]) and stitched[0, 0] == 1.0


@pytest.mark.parametrize("bad", [{"overlap": 1.0}, {"overlap": -0.1}, {"tile_size": 0}])
def test_bad_tiling_parameters_name_the_parameter(bad):
    args = {"tile_size": 256, "overlap": 0.4, **bad}
    with pytest.raises(ValueError, match=f"data.{next(iter(bad))}"):
        tile_stride(**args)
