import cv2
import numpy as np
import pytest
import rasterio
from affine import Affine

from wsss_project.imagery.readers import (
    find_scene_files,
    read_image,
    read_mask,
    write_georeferenced_mask,
)

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
    write_georeferenced_mask(tmp_path / "out" / "s_pred.tif", np.ones((16, 16), np.uint8), meta)
    with rasterio.open(tmp_path / "out" / "s_pred.tif") as src:
        assert (
            src.crs.to_epsg() == 32648 and src.transform == transform and src.read(1).sum() == 256
        )
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["s_pred.tif"]


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
    with pytest.raises(FileNotFoundError, match=r"data\.folder\.masks_dir.*a_2\.jpg"):
        find_scene_files(tmp_path / "img", tmp_path / "msk", [".png", ".jpg"])
    (tmp_path / "img" / "b_1.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="b_1"):
        find_scene_files(tmp_path / "img", None, [".png", ".jpg"])
    with pytest.raises(FileNotFoundError, match=r"data\.folder\.images_dir"):
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
    with pytest.raises(FileNotFoundError, match=r"data\.folder\.masks_dir.*nope"):
        find_scene_files(tmp_path / "img", tmp_path / "nope", [".png"])


def test_unreadable_geotiff_is_named(tmp_path):
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ValueError, match=r"broken\.tif"):
        read_image(tmp_path / "broken.tif")
    with pytest.raises(ValueError, match=r"broken\.tif"):
        read_mask(tmp_path / "broken.tif", (1, 1), [255])
