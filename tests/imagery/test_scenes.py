"""Scenes read by window give the tiles of the whole-scene cut, byte for byte; bad input at read time."""

from __future__ import annotations

import json
import logging
import tracemalloc

import cv2
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from wsss_project.contracts import IGNORE_INDEX
from wsss_project.imagery import readers
from wsss_project.imagery.labels import image_level_labels
from wsss_project.imagery.scenes import FolderScene
from wsss_project.imagery.tiling import TileWindow, cut_tile
from wsss_project.pipelines.data_preparation.nodes import (
    load_scenes,
    split_scene_table,
    tile_scenes,
)

TILE = 32
FOLDER = {
    "images_dir": None, "masks_dir": None, "extensions": [".png", ".tif"], "mask_class_values": [255],
    "mask_palette": None, "source_pattern": "^([A-Za-z]+)[_-]", "rgb_bands": [1, 2, 3],
    "stretch_percentiles": [2.0, 98.0], "radiometry": "stretch", "stretch_sample_pixels": 2048 * 2048,
}
DATA = {
    "source": "folder", "synthetic": {"n_scenes": 2, "height": 64, "width": 64, "generator": {}},
    "folder": FOLDER, "tile_size": TILE, "overlap": 0.4, "label_min_fraction": 0.01,
    "split": {"test_fraction": 0.5},
}
SIZE = (70, 90)  # not a multiple of the tile: the last row and column of tiles are padded


def _old_stretch(array, low_percentile, high_percentile, valid, stretch_uint8):
    """stretch_to_uint8 as it was before scenes were read by window (verbatim): the reference."""
    keep = np.broadcast_to(valid, array.shape)
    if array.dtype == np.uint8 and not stretch_uint8:
        return np.where(keep, array, 0).astype(np.uint8)
    values = array.astype(np.float64)
    out = np.zeros(array.shape, np.uint8)
    for band in range(array.shape[-1]):
        band_keep = keep[..., band]
        if not band_keep.any():
            continue
        band_values = values[..., band][band_keep]
        low, high = np.percentile(band_values, [low_percentile, high_percentile])
        scale = 255.0 / (high - low) if high > low else 0.0
        out[..., band][band_keep] = np.clip((band_values - low) * scale, 0, 255).round().astype(np.uint8)
    return out


def _old_whole_scene(image_path, mask_path, folder):
    """The whole scene's RGB and class-index mask as data_preparation read them before (the reference)."""
    bands = list(folder["rgb_bands"])
    if image_path.suffix == ".tif":
        with rasterio.open(image_path) as src:
            indexes = [1, 1, 1] if src.count == 1 else bands
            values = np.moveaxis(src.read(indexes), 0, -1)
            band_valid = np.moveaxis(src.read_masks(indexes), 0, -1) != 0
        if np.issubdtype(values.dtype, np.floating):
            band_valid &= np.isfinite(values)
    else:
        decoded = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
        decoded = decoded[..., None] if decoded.ndim == 2 else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
        values = decoded[..., [0, 0, 0] if decoded.shape[2] == 1 else [b - 1 for b in bands]]
        band_valid = np.ones(values.shape, bool)
    low, high = folder["stretch_percentiles"]
    rgb = _old_stretch(values, low, high, band_valid, folder["radiometry"] == "stretch")
    mask = readers.read_mask(mask_path, rgb.shape[:2], folder["mask_class_values"])
    mask[~band_valid.any(axis=2)] = IGNORE_INDEX
    return rgb, mask


def _write_tif(path, bands, nodata=None, crs="EPSG:32648", transform=None, **extra):
    transform = Affine(2, 0, 500000, 0, -2, 3000000) if transform is None else transform
    with rasterio.open(
        path, "w", driver="GTiff", height=bands.shape[1], width=bands.shape[2], count=bands.shape[0],
        dtype=bands.dtype, nodata=nodata, crs=crs, transform=transform, **extra,
    ) as dst:
        dst.write(bands)
    return path


def _mask(rng, size=SIZE):
    mask = np.zeros(size, np.uint8)
    mask[5:30, 10:50] = 255
    mask[rng.random(size) < 0.002] = 255  # specks below label_min_fraction: bottom tiles stay negative
    return mask


def _scenes(tmp_path, kind, n=2):
    """`n` scenes of one kind in images/ and masks/ (masks PNG, or GeoTIFF for `*_tifmask`)."""
    rng = np.random.default_rng(7)
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir(exist_ok=True)
    for i in range(n):
        name = f"s_{i}"
        nodata = np.zeros(SIZE, bool)
        nodata[:20, :25] = True  # a nodata block in the first tiles
        if kind == "png8":
            image = rng.integers(20, 220, (*SIZE, 3), dtype=np.uint8)
            cv2.imwrite(str(tmp_path / "images" / f"{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        elif kind == "png16":
            image = rng.integers(500, 9000, (*SIZE, 3), dtype=np.uint16)
            cv2.imwrite(str(tmp_path / "images" / f"{name}.png"), image)
        elif kind == "grey_png":
            cv2.imwrite(str(tmp_path / "images" / f"{name}.png"), rng.integers(0, 256, SIZE, dtype=np.uint8))
        elif kind in ("tif16", "tif16_tifmask"):
            bands = rng.integers(1000, 4000, (4, *SIZE), dtype=np.uint16)
            bands[:, nodata] = 0
            bands[0, 40, 40] = 0  # one band masked in an otherwise valid pixel
            _write_tif(tmp_path / "images" / f"{name}.tif", bands, nodata=0, tiled=True, blockxsize=16, blockysize=16)
        elif kind == "tif8":
            bands = rng.integers(1, 256, (3, *SIZE), dtype=np.uint8)
            bands[:, nodata] = 0
            _write_tif(tmp_path / "images" / f"{name}.tif", bands, nodata=0)
        elif kind == "float":
            bands = rng.uniform(0.05, 0.4, (3, *SIZE)).astype(np.float32)
            bands[:, nodata] = -9999.0
            bands[:, 60, 60] = np.nan
            _write_tif(tmp_path / "images" / f"{name}.tif", bands, nodata=-9999.0)
        elif kind == "grey_tif":
            _write_tif(tmp_path / "images" / f"{name}.tif", rng.integers(0, 3000, (1, *SIZE), dtype=np.uint16))
        mask = _mask(rng)
        if kind.endswith("_tifmask"):
            _write_tif(tmp_path / "masks" / f"{name}.tif", mask[None], crs=None, transform=Affine.identity())
        else:
            cv2.imwrite(str(tmp_path / "masks" / f"{name}.png"), mask)
    return {**DATA, "folder": {**FOLDER, "images_dir": str(tmp_path / "images"), "masks_dir": str(tmp_path / "masks")}}


CASES = [
    ("png8", {}), ("png8", {"radiometry": "as_read"}), ("png16", {}), ("grey_png", {}),
    ("tif16", {}), ("tif16", {"rgb_bands": [4, 2, 1]}), ("tif16_tifmask", {"radiometry": "as_read"}),
    ("tif8", {}), ("tif8", {"radiometry": "as_read"}), ("float", {}), ("grey_tif", {}),
]


@pytest.mark.parametrize(("kind", "folder"), CASES, ids=[f"{k}-{'-'.join(map(str, f.values())) or 'default'}" for k, f in CASES])
def test_tiles_read_by_window_are_the_tiles_of_the_whole_scene_cut(tmp_path, kind, folder):
    data = _scenes(tmp_path, kind)
    data = {**data, "folder": {**data["folder"], **folder}}
    scenes_raw = load_scenes(data, ["landslide"], 0)
    index, tiles, masks = tile_scenes(scenes_raw, split_scene_table(scenes_raw, data, 0), data, ["landslide"])
    assert set(tiles) == set(masks) == set(index["tile_id"])
    assert index["height"].lt(TILE).any() and index["width"].lt(TILE).any()  # edge tiles are padded
    padded = 0
    for scene_id, scene_tiles in index.groupby("scene_id"):
        scene = scenes_raw[scene_id]
        rgb, mask = _old_whole_scene(scene.image_path, scene.mask_path, data["folder"])
        for tile in scene_tiles.itertuples():
            window = TileWindow(tile.row, tile.col, tile.height, tile.width)
            want_tile, want_mask = cut_tile(rgb, window, TILE), cut_tile(mask, window, TILE, pad_value=IGNORE_INDEX)
            got_tile, got_mask = tiles[tile.tile_id](), masks[tile.tile_id]()
            assert got_tile.dtype == want_tile.dtype and got_mask.dtype == want_mask.dtype
            assert got_tile.tobytes() == want_tile.tobytes(), tile.tile_id
            assert got_mask.tobytes() == want_mask.tobytes(), tile.tile_id
            assert tile.landslide == image_level_labels(want_mask, 1, data["label_min_fraction"])[0]
            padded += int(tile.height < TILE or tile.width < TILE)
    assert padded and set(index["landslide"]) == {0, 1}


def test_stretch_of_a_scene_larger_than_the_sample_comes_from_a_decimated_read(tmp_path, monkeypatch):
    data = _scenes(tmp_path, "tif16")
    whole = load_scenes(data, ["landslide"], 0)
    reads = []
    original = readers._geotiff_read
    monkeypatch.setattr(readers, "_geotiff_read", lambda *a, **k: reads.append(k.get("out_shape")) or original(*a, **k))
    sampled = load_scenes({**data, "folder": {**data["folder"], "stretch_sample_pixels": 35 * 45}}, ["landslide"], 0)
    assert (35, 45) in reads  # a decimated read of at most stretch_sample_pixels, same aspect
    for scene_id, scene in sampled.items():
        assert isinstance(scene, FolderScene) and whole[scene_id].stretch is not None
        got, want = np.array(scene.stretch), np.array(whole[scene_id].stretch)
        assert not np.array_equal(got, want)  # another sample: not the whole scene's percentiles
        np.testing.assert_allclose(got, want, rtol=0.05)  # but close to them


def _big_tif(path, side, tile_block=256):
    """A `side`-px RGB uint8 GeoTIFF written by window, nodata 0 in its top-left block."""
    rng = np.random.default_rng(0)
    with rasterio.open(
        path, "w", driver="GTiff", height=side, width=side, count=3, dtype="uint8", nodata=0, crs="EPSG:32648",
        transform=Affine(1, 0, 500000, 0, -1, 3000000), tiled=True, blockxsize=tile_block, blockysize=tile_block,
    ) as dst:
        for row in range(0, side, tile_block):
            block = rng.integers(1, 256, (3, tile_block, side), dtype=np.uint8)
            if row == 0:
                block[:, :100, :100] = 0
            dst.write(block, window=Window(0, row, side, tile_block))
    return path


def test_a_2048_px_scene_is_read_one_tile_at_a_time(tmp_path, monkeypatch):
    """The streaming property, cheaply: no read of the scene is larger than one tile, but the
    stretch read of at most stretch_sample_pixels (the 8192-px run is in tests/benchmarks)."""
    side, tile, sample = 2048, 256, 128 * 128
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    _big_tif(tmp_path / "images" / "big_0.tif", side)
    mask = np.zeros((1, side, side), np.uint8)
    mask[0, 500:900, 300:700] = 255
    _write_tif(tmp_path / "masks" / "big_0.tif", mask, tiled=True, blockxsize=256, blockysize=256)
    small = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "images" / "big_1.png"), small)
    cv2.imwrite(str(tmp_path / "masks" / "big_1.png"), np.zeros((64, 64), np.uint8))
    data = {**DATA, "tile_size": tile, "folder": {**FOLDER, "stretch_sample_pixels": sample,
            "images_dir": str(tmp_path / "images"), "masks_dir": str(tmp_path / "masks")}}
    reads = []
    original = readers._geotiff_read

    def spy(path, *args, **kwargs):
        values, valid, info = original(path, *args, **kwargs)
        if info.height == side:
            reads.append(max(a[0].size for a in (values, valid) if a is not None))  # pixels per band
        return values, valid, info

    monkeypatch.setattr(readers, "_geotiff_read", spy)
    scenes_raw = load_scenes(data, ["landslide"], 0)
    scenes = split_scene_table(scenes_raw, data, 0)
    tracemalloc.start()
    index, tiles, masks = tile_scenes(scenes_raw, scenes, data, ["landslide"])
    big = index[index["scene_id"] == "big_0"]
    for tile_id in big["tile_id"]:
        assert tiles[tile_id]().shape == (tile, tile, 3) and masks[tile_id]().shape == (tile, tile)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # Python's allocations (numpy's included; GDAL's own buffers are not traced, the benchmark
    # measures RSS) stay under half the scene's RGB: neither the scene nor its tile set is held.
    assert peak < side * side * 3 / 2
    assert len(big) >= (side // tile) ** 2 and big["landslide"].sum() > 0
    assert max(reads) <= max(tile * tile, sample) and reads.count(sample) <= 1
    assert len(reads) >= 3 * len(big)  # every tile was read (labels, tile, mask), none from a whole read
    scene = scenes_raw["big_0"]
    assert scene.stretch is not None and scenes.set_index("scene_id").loc["big_0", "image_path"].endswith("big_0.tif")
    assert scenes.set_index("scene_id").loc["big_1", "image_path"].endswith("big_1.png")


# ---------------------------------------------------------------------------------- bad input


def test_geotiff_without_crs_keeps_its_transform_and_is_logged_once(tmp_path, caplog):
    data = _scenes(tmp_path, "tif8")
    for i, path in enumerate(sorted((tmp_path / "images").iterdir())):
        with rasterio.open(path) as src:
            bands, transform = src.read(), src.transform
        _write_tif(path, bands, nodata=0, crs=None, transform=Affine.identity() if i else transform)
    with caplog.at_level(logging.INFO):
        scenes = split_scene_table(load_scenes(data, ["landslide"], 0), data, 0)
    assert scenes["crs"].isna().all()
    assert scenes["transform"].tolist() == ["[2.0, 0.0, 500000.0, 0.0, -2.0, 3000000.0]", "null"]
    assert [r.getMessage() for r in caplog.records].count(
        "2 GeoTIFF scene(s) have no CRS (s_0.tif, s_1.tif): treated as not georeferenced (crs None); "
        "a non-identity transform is kept as given"
    ) == 1


def test_rotated_transform_is_kept_and_tiles_are_cut_in_pixel_space(tmp_path, caplog):
    data = _scenes(tmp_path, "tif8")
    rotated = Affine.translation(500000, 3000000) @ Affine.rotation(30) @ Affine.scale(2, -2)
    with rasterio.open(tmp_path / "images" / "s_0.tif", "r+") as dst:
        dst.transform = rotated
    with caplog.at_level(logging.INFO):
        scenes_raw = load_scenes(data, ["landslide"], 0)
    scenes = split_scene_table(scenes_raw, data, 0)
    assert np.allclose(json.loads(scenes.loc[0, "transform"]), list(rotated)[:6])
    assert "1 scene(s) have a rotated or sheared transform (s_0.tif)" in caplog.text
    index, tiles, _ = tile_scenes(scenes_raw, scenes, data, ["landslide"])
    rgb, _ = _old_whole_scene(tmp_path / "images" / "s_0.tif", tmp_path / "masks" / "s_0.png", data["folder"])
    for tile in index[index["scene_id"] == "s_0"].itertuples():
        window = TileWindow(tile.row, tile.col, tile.height, tile.width)
        np.testing.assert_array_equal(tiles[tile.tile_id](), cut_tile(rgb, window, TILE))


@pytest.mark.parametrize("sample_pixels", [2048 * 2048, 20 * 20], ids=["read whole", "decimated read"])
def test_all_nodata_scene_is_an_error_naming_the_file(tmp_path, sample_pixels):
    data = _scenes(tmp_path, "tif16")
    with rasterio.open(tmp_path / "images" / "s_1.tif", "r+") as dst:
        dst.write(np.zeros((4, *SIZE), np.uint16))
    data = {**data, "folder": {**data["folder"], "stretch_sample_pixels": sample_pixels}}
    with pytest.raises(ValueError, match=r"s_1\.tif: every pixel.* is nodata"):
        load_scenes(data, ["landslide"], 0)


def test_one_band_scene_is_grey_under_the_default_bands_and_an_error_otherwise(tmp_path):
    data = _scenes(tmp_path, "grey_tif")
    scenes_raw = load_scenes(data, ["landslide"], 0)
    image = scenes_raw["s_0"].read_image(scenes_raw["s_0"].whole())
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all()
    assert image.std() > 0
    with pytest.raises(ValueError, match=r"s_0\.tif.*data\.folder\.rgb_bands"):
        load_scenes({**data, "folder": {**data["folder"], "rgb_bands": [1, 1, 2]}}, ["landslide"], 0)


def test_mask_values_of_a_large_scene_are_checked_as_its_tiles_are_cut(tmp_path):
    data = _scenes(tmp_path, "tif16_tifmask")
    with rasterio.open(tmp_path / "masks" / "s_0.tif", "r+") as dst:
        mask = dst.read()
        mask[0, 65, 85] = 7
        dst.write(mask)
    with pytest.raises(ValueError, match=r"s_0\.tif: values \[7\]"):
        load_scenes(data, ["landslide"], 0)  # read whole: checked when loaded
    data = {**data, "folder": {**data["folder"], "stretch_sample_pixels": 20 * 20}}
    scenes_raw = load_scenes(data, ["landslide"], 0)  # larger than the sample: only its size is checked here
    with pytest.raises(ValueError, match=r"s_0\.tif: values \[7\]"):
        tile_scenes(scenes_raw, split_scene_table(scenes_raw, data, 0), data, ["landslide"])


def test_a_png_scene_is_decoded_once_per_pass_not_once_per_tile(tmp_path, monkeypatch):
    data = _scenes(tmp_path, "png8")
    decodes = []
    for name in ("_decode_plain_image", "_decode_mask"):
        original = getattr(readers, name)
        monkeypatch.setattr(readers, name, lambda path, _f=original, _n=name: decodes.append((_n, path.name)) or _f(path))
    scenes_raw = load_scenes(data, ["landslide"], 0)
    loaded = len(decodes)
    index, tiles, masks = tile_scenes(scenes_raw, split_scene_table(scenes_raw, data, 0), data, ["landslide"])
    for tile_id in sorted(tiles):  # in the order PartitionedDataset saves them
        tiles[tile_id]()
    for tile_id in sorted(masks):
        masks[tile_id]()
    # per scene: its mask for the labels, its image for the tiles, its mask for the tile masks
    assert len(index) > 3 * len(scenes_raw) and len(decodes) - loaded == 3 * len(scenes_raw)
