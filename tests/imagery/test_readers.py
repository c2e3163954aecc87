import cv2
import numpy as np
import pytest
import rasterio
from affine import Affine

from wsss_project.errors import UserInputError
from wsss_project.imagery.readers import (
    find_scene_files,
    read_image,
    read_image_and_valid,
    read_mask,
    read_valid_window,
    stretch_to_uint8,
    validate_rgb_bands,
)
from wsss_project.imagery.tiling import TileWindow

RNG = np.random.default_rng(0)


def _rgb(shape=(20, 30)):
    return RNG.integers(0, 256, (*shape, 3), dtype=np.uint8)


def test_png_and_jpeg_are_read_as_rgb(tmp_path):
    image = _rgb()
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    rgb, meta = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(rgb, image)
    assert meta == {"crs": None, "transform": None}
    flat = np.zeros((20, 30, 3), np.uint8)
    flat[..., 0] = 200  # pure red survives JPEG well enough to check the channel order
    cv2.imwrite(str(tmp_path / "b.jpg"), cv2.cvtColor(flat, cv2.COLOR_RGB2BGR))
    rgb, _ = read_image(tmp_path / "b.jpg")
    assert rgb[..., 0].mean() > 150 and rgb[..., 2].mean() < 50


def test_grey_and_16_bit_images_become_rgb_uint8(tmp_path):
    grey = RNG.integers(0, 256, (10, 12), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    rgb, _ = read_image(tmp_path / "g.png")
    assert rgb.shape == (10, 12, 3) and (rgb[..., 0] == grey).all()
    deep = RNG.integers(1000, 4000, (10, 12), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    rgb, _ = read_image(tmp_path / "d.png")
    assert rgb.dtype == np.uint8 and rgb.min() == 0 and rgb.max() == 255


def test_geotiff_keeps_crs_and_transform(tmp_path):
    transform = Affine(0.5, 0, 500000, 0, -0.5, 3000000)
    data = RNG.integers(0, 3000, (4, 16, 16), dtype=np.uint16)  # 4 bands, 16-bit
    with rasterio.open(
        tmp_path / "s.tif",
        "w",
        driver="GTiff",
        height=16,
        width=16,
        count=4,
        dtype="uint16",
        crs="EPSG:32648",
        transform=transform,
    ) as dst:
        dst.write(data)
    rgb, meta = read_image(tmp_path / "s.tif")
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    assert "32648" in meta["crs"] and meta["transform"] == list(transform)[:6]


def test_masks_by_value_and_by_palette(tmp_path):
    values = np.array([[0, 255, 255], [0, 0, 255]], np.uint8)
    cv2.imwrite(str(tmp_path / "m.png"), values)
    assert read_mask(tmp_path / "m.png", (2, 3), [255]).tolist() == [[0, 1, 1], [0, 0, 1]]
    multi = np.array([[0, 1, 2, 3]], np.uint8)
    cv2.imwrite(str(tmp_path / "k.png"), multi)
    assert read_mask(tmp_path / "k.png", (1, 4), [1, 2, 3]).tolist() == [[0, 1, 2, 3]]
    palette = [[255, 0, 0], [0, 0, 255]]
    rgb = np.array([[[0, 0, 0], [255, 0, 0], [0, 0, 255]]], np.uint8)
    cv2.imwrite(str(tmp_path / "p.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert read_mask(tmp_path / "p.png", (1, 3), [], palette).tolist() == [[0, 1, 2]]


def test_mask_errors_name_the_file(tmp_path):
    cv2.imwrite(str(tmp_path / "m.png"), np.array([[0, 7]], np.uint8))
    with pytest.raises(ValueError, match=r"m\.png.*\[7\]"):
        read_mask(tmp_path / "m.png", (1, 2), [255])
    with pytest.raises(ValueError, match=r"m\.png.*\(1, 2\).*\(5, 5\)"):
        read_mask(tmp_path / "m.png", (5, 5), [1, 7])
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"x\.png"):
        read_mask(tmp_path / "x.png", (1, 2), [255])
    with pytest.raises(ValueError, match=r"x\.png"):
        read_image(tmp_path / "x.png")


def test_scene_files_pair_by_stem_and_report_problems(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    for name in ("b_1.png", "a_2.jpg", "notes.txt"):
        (tmp_path / "img" / name).write_bytes(b"")
    for name in ("b_1.png", "a_2.png"):
        (tmp_path / "msk" / name).write_bytes(b"")
    files = find_scene_files(tmp_path / "img", tmp_path / "msk", [".png", ".jpg"])
    assert [f.scene_id for f in files] == ["a_2", "b_1"] and files[0].mask_path.name == "a_2.png"
    (tmp_path / "msk" / "a_2.png").unlink()
    with pytest.raises(UserInputError, match=r"data\.folder\.masks_dir.*a_2\.jpg"):
        find_scene_files(tmp_path / "img", tmp_path / "msk", [".png", ".jpg"])
    (tmp_path / "img" / "b_1.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="b_1"):
        find_scene_files(tmp_path / "img", None, [".png", ".jpg"])
    with pytest.raises(UserInputError, match=r"data\.folder\.images_dir"):
        find_scene_files(tmp_path / "nope", None, [".png"])


def test_reads_real_landslide_pairs(real_data):
    files = find_scene_files(real_data / "images", real_data / "masks", [".png"])
    assert len(files) == 72
    for scene in (files[0], files[-1]):
        image, _ = read_image(scene.image_path)
        mask = read_mask(scene.mask_path, image.shape[:2], [255])
        assert set(np.unique(mask)) == {0, 1}


def test_ignore_value_and_white_survive_and_unknown_colours_are_listed(tmp_path):
    cv2.imwrite(str(tmp_path / "v.png"), np.array([[0, 1, 255]], np.uint8))
    assert read_mask(tmp_path / "v.png", (1, 3), [1]).tolist() == [[0, 1, 255]]
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [9, 9, 9]]], np.uint8)
    cv2.imwrite(str(tmp_path / "c.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    with pytest.raises(ValueError, match=r"c\.png.*\[9, 9, 9\]"):
        read_mask(tmp_path / "c.png", (1, 4), [], [[255, 0, 0]])
    with pytest.raises(ValueError, match=r"c\.png.*mask_palette"):
        read_mask(tmp_path / "c.png", (1, 4), [255])
    rgb[0, 3] = 0
    cv2.imwrite(str(tmp_path / "c.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert read_mask(tmp_path / "c.png", (1, 4), [], [[255, 0, 0]]).tolist() == [[0, 255, 1, 0]]
    # a white class wins over "ignore"
    white = read_mask(tmp_path / "c.png", (1, 4), [], [[255, 0, 0], [255, 255, 255]])
    assert white.tolist() == [[0, 2, 1, 0]]


def test_empty_image_folder_and_missing_mask_folder_are_named(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "readme.txt").write_bytes(b"")
    (tmp_path / "img" / "._a.png").write_bytes(b"")  # macOS resource fork, not an image
    with pytest.raises(ValueError, match=r"data\.folder\.images_dir.*img"):
        find_scene_files(tmp_path / "img", None, [".png"])
    (tmp_path / "img" / "a.PNG").write_bytes(b"")
    assert [f.scene_id for f in find_scene_files(tmp_path / "img", None, ["png"])] == ["a"]
    with pytest.raises(UserInputError, match=r"data\.folder\.masks_dir.*nope"):
        find_scene_files(tmp_path / "img", tmp_path / "nope", [".png"])


def test_unreadable_geotiff_is_named(tmp_path):
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ValueError, match=r"broken\.tif"):
        read_image(tmp_path / "broken.tif")
    with pytest.raises(ValueError, match=r"broken\.tif"):
        read_mask(tmp_path / "broken.tif", (1, 1), [255])


def _write_tif(path, bands, nodata=None, **profile):
    """A GeoTIFF of (count, H, W) `bands`, with an optional nodata value."""
    count, height, width = bands.shape
    with rasterio.open(
        path, "w", driver="GTiff", height=height, width=width, count=count,
        dtype=bands.dtype.name, nodata=nodata, crs="EPSG:32648",
        transform=Affine(1, 0, 500000, 0, -1, 3000000), **profile,
    ) as dst:
        dst.write(bands)
    return path


def _stretched(values, low=2.0, high=98.0):
    """The per-band percentile stretch of (N, bands) `values` alone, computed independently of the reader."""
    lo, hi = np.percentile(values.astype(np.float64), [low, high], axis=0)
    return np.clip((values - lo) * 255.0 / (hi - lo), 0, 255).round().astype(np.uint8)


def test_the_stretch_is_per_band_so_a_band_gain_and_offset_change_nothing():
    band = RNG.integers(0, 200, (32, 32), dtype=np.uint8)
    grey = np.stack([band, band, band], axis=-1)
    # a sensor with another gain and offset per band sees the same ground
    cast = np.stack([band // 2 + 20, band, (band * 1.2 + 5).astype(np.uint8)], axis=-1)
    stretched = stretch_to_uint8(grey, stretch_uint8=True)
    assert np.abs(stretch_to_uint8(cast, stretch_uint8=True).astype(int) - stretched).max() <= 2  # halved grey levels round
    assert np.array_equal(stretched[..., 0], stretched[..., 2])
    np.testing.assert_array_equal(stretch_to_uint8(cast), cast)  # uint8 is kept unless asked


def test_nodata_value_is_left_out_of_the_stretch_and_written_as_zero(tmp_path):
    bands = RNG.integers(1000, 4000, (4, 24, 24), dtype=np.uint16)
    nodata = np.zeros((24, 24), bool)
    nodata[:10, :12] = True  # a corner collar, 21% of the scene: would pin the 2nd percentile at 0
    bands[:, nodata] = 0
    rgb, meta = read_image(_write_tif(tmp_path / "s.tif", bands, nodata=0))
    # valid pixels get the stretch they would get if the nodata were absent: the full 0..255
    np.testing.assert_array_equal(rgb[~nodata], _stretched(np.moveaxis(bands[:3], 0, -1)[~nodata]))
    assert rgb[~nodata].min() == 0 and rgb[~nodata].max() == 255
    assert (rgb[nodata] == 0).all()
    assert "32648" in meta["crs"] and meta["transform"] is not None
    same, valid, _ = read_image_and_valid(tmp_path / "s.tif")
    np.testing.assert_array_equal(same, rgb)
    np.testing.assert_array_equal(valid, ~nodata)


def test_float_nodata_and_nan_are_left_out_of_the_stretch(tmp_path):
    bands = RNG.uniform(0.05, 0.4, (3, 16, 16)).astype(np.float32)  # reflectance
    bands[:, :, :4] = -9999.0
    bands[:, 15, 15] = np.nan  # NaN without a declared nodata is no data either
    nodata = np.zeros((16, 16), bool)
    nodata[:, :4], nodata[15, 15] = True, True
    rgb, _ = read_image(_write_tif(tmp_path / "f.tif", bands, nodata=-9999.0))
    np.testing.assert_array_equal(rgb[~nodata], _stretched(np.moveaxis(bands, 0, -1)[~nodata]))
    assert (rgb[nodata] == 0).all()
    np.testing.assert_array_equal(read_image_and_valid(tmp_path / "f.tif")[1], ~nodata)


def test_internal_mask_marks_nodata(tmp_path):
    bands = np.full((3, 8, 8), 120, np.uint8)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(
            tmp_path / "m.tif", "w", driver="GTiff", height=8, width=8, count=3, dtype="uint8",
            crs="EPSG:32648", transform=Affine(1, 0, 500000, 0, -1, 3000000),
        ) as dst:
            dst.write(bands)
            mask = np.full((8, 8), 255, np.uint8)
            mask[:, :3] = 0
            dst.write_mask(mask)
    rgb, _ = read_image(tmp_path / "m.tif")
    assert (rgb[:, :3] == 0).all() and (rgb[:, 3:] == 120).all()  # 8-bit is not stretched
    valid = read_image_and_valid(tmp_path / "m.tif")[1]
    assert valid[:, 3:].all() and not valid[:, :3].any()


def test_one_band_masked_in_a_valid_pixel_keeps_the_pixel(tmp_path):
    # GDAL's dataset-mask rule: a pixel is nodata only when all its bands are
    bands = RNG.integers(1000, 4000, (3, 8, 8), dtype=np.uint16)
    bands[0, 2, 2] = 0
    bands[:, 5, 5] = 0
    rgb, valid, _ = read_image_and_valid(_write_tif(tmp_path / "p.tif", bands, nodata=0))
    assert valid[2, 2] and not valid[5, 5] and valid.sum() == 63
    assert rgb[2, 2, 0] == 0 and (rgb[5, 5] == 0).all()


def test_all_nodata_scene_is_named(tmp_path):
    bands = np.full((3, 6, 6), -9999.0, np.float32)
    with pytest.raises(ValueError, match=r"empty\.tif.*nodata"):
        read_image_and_valid(_write_tif(tmp_path / "empty.tif", bands, nodata=-9999.0))


def test_rgb_bands_choose_and_order_the_bands(tmp_path):
    bands = np.stack(
        [np.full((6, 6), v, np.uint16) for v in (100, 200, 300, 400)]
    ) + RNG.integers(0, 50, (4, 6, 6), dtype=np.uint16)
    path = _write_tif(tmp_path / "b.tif", bands)
    default, _, _ = read_image_and_valid(path)
    swapped, _, _ = read_image_and_valid(path, rgb_bands=[3, 2, 1])
    np.testing.assert_array_equal(swapped, default[..., ::-1])
    false_colour, _, _ = read_image_and_valid(path, rgb_bands=(4, 3, 2))
    # band 4 lands in R, band 3 in G, band 2 in B, each stretched on its own values
    for channel, band in enumerate((4, 3, 2)):
        expected = _stretched(bands[band - 1].reshape(-1, 1)).reshape(bands.shape[1:])
        np.testing.assert_array_equal(false_colour[..., channel], expected)
    # PNG/JPEG: bands are the channels R=1, G=2, B=3
    image = _rgb()
    cv2.imwrite(str(tmp_path / "c.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    swapped_png, _ = read_image(tmp_path / "c.png", rgb_bands=[3, 2, 1])
    np.testing.assert_array_equal(swapped_png, image[..., ::-1])


def test_band_the_file_lacks_names_the_parameter_and_the_file(tmp_path):
    path = _write_tif(tmp_path / "four.tif", RNG.integers(0, 9, (4, 5, 5), dtype=np.uint16))
    with pytest.raises(ValueError, match=r"four\.tif.*data\.folder\.rgb_bands.*band 5.*4 band"):
        read_image(path, rgb_bands=[5, 3, 2])
    cv2.imwrite(str(tmp_path / "c.png"), _rgb())
    with pytest.raises(ValueError, match=r"c\.png.*data\.folder\.rgb_bands"):
        read_image(tmp_path / "c.png", rgb_bands=[4, 3, 2])
    two = _write_tif(tmp_path / "two.tif", RNG.integers(0, 9, (2, 5, 5), dtype=np.uint16))
    with pytest.raises(ValueError, match=r"two\.tif.*data\.folder\.rgb_bands"):
        read_image(two)


@pytest.mark.parametrize("bad", [[0, 1, 2], [1, 2], [1, 2, 3, 4], "123", [1.5, 2, 3], [True, 2, 3]])
def test_malformed_rgb_bands_name_the_parameter(bad):
    with pytest.raises(ValueError, match=r"data\.folder\.rgb_bands"):
        validate_rgb_bands(bad)


def test_one_band_image_is_grey_only_under_the_default_bands(tmp_path):
    band = RNG.integers(0, 256, (1, 7, 9), dtype=np.uint8)
    path = _write_tif(tmp_path / "grey.tif", band)
    rgb, _ = read_image(path)
    assert rgb.shape == (7, 9, 3) and all((rgb[..., c] == band[0]).all() for c in range(3))
    assert validate_rgb_bands(None) == (1, 2, 3)
    np.testing.assert_array_equal(read_image(path, rgb_bands=[1, 1, 1])[0], rgb)
    with pytest.raises(ValueError, match=r"grey\.tif.*data\.folder\.rgb_bands"):
        read_image(path, rgb_bands=[1, 1, 2])


def test_the_valid_pixels_of_a_window_follow_the_rule_data_preparation_read_the_scene_with(tmp_path):
    bands = RNG.integers(1, 3000, (4, 20, 30), dtype=np.uint16)
    bands[:, 15:, 20:] = 0  # nodata in every band: no data
    bands[:3, 0:2, 0:2] = 0  # nodata in the RGB bands only: no data for rgb_bands [1, 2, 3] ...
    with rasterio.open(tmp_path / "s.tif", "w", driver="GTiff", height=20, width=30, count=4, dtype="uint16",
                       crs="EPSG:32645", transform=Affine(2, 0, 0, 0, -2, 0), nodata=0) as dst:
        dst.write(bands)
    _, whole, _ = read_image_and_valid(tmp_path / "s.tif")
    window = read_valid_window(tmp_path / "s.tif", (1, 2, 3), TileWindow(10, 15, 10, 15))
    np.testing.assert_array_equal(window, whole[10:20, 15:30])
    assert not window[5:, 5:].any() and window[:5].all()
    assert not read_valid_window(tmp_path / "s.tif", (1, 2, 3), TileWindow(0, 0, 2, 2)).any()
    assert read_valid_window(tmp_path / "s.tif", (4, 2, 1), TileWindow(0, 0, 2, 2)).all()  # ... band 4 has data
    cv2.imwrite(str(tmp_path / "p.png"), _rgb())
    assert read_valid_window(tmp_path / "p.png", (1, 2, 3), TileWindow(0, 0, 5, 5)).all()  # PNG carries no nodata
