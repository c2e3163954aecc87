"""data_preparation on real imagery and on bad input."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from wsss_project.imagery.tiling import TileWindow, cut_tile, stitch_mean
from wsss_project.pipelines.data_preparation import create_pipeline
from wsss_project.pipelines.data_preparation.nodes import (
    load_scenes,
    split_scene_table,
    tile_scenes,
)

DATA = {
    "source": "folder",
    "synthetic": {"n_scenes": 2, "height": 64, "width": 64, "generator": {}},
    "folder": {
        "images_dir": None, "masks_dir": None, "extensions": [".png", ".jpg", ".tif"],
        "mask_class_values": [255], "mask_palette": None, "source_pattern": "^([A-Za-z]+)[_-]",
        "rgb_bands": [1, 2, 3], "stretch_percentiles": [2.0, 98.0], "radiometry": "stretch",
        "stretch_sample_pixels": 2048 * 2048,
    },
    "tile_size": 256, "overlap": 0.4, "label_min_fraction": 0.01, "split": {"test_fraction": 0.3},
}


def _image(scene) -> np.ndarray:
    """A scene's whole RGB image, read as one window."""
    return scene.read_image(scene.whole())


def _run(data: dict, classes=("landslide",), seed: int = 0) -> dict:
    catalog = DataCatalog(
        {"params:data": MemoryDataset(data), "params:classes": MemoryDataset(list(classes)), "params:seed": MemoryDataset(seed)}
    )
    for name in ("scenes_raw", "scenes", "tile_index", "tiles", "tile_masks"):
        catalog[name] = MemoryDataset(copy_mode="assign")
    outputs = SequentialRunner().run(create_pipeline(), catalog)
    return {name: dataset.load() for name, dataset in outputs.items()}


@pytest.fixture
def real_subset(real_data, tmp_path):
    """Four bijie and four sichuan scenes copied to a temporary folder."""
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    names = sorted(p.name for p in (real_data / "images").iterdir())
    chosen = [n for n in names if n.startswith("bijie")][:4] + [n for n in names if n.startswith("sichuan")][:4]
    for name in chosen:
        for sub in ("images", "masks"):
            shutil.copy(real_data / sub / name, tmp_path / sub / name)
    return tmp_path


def test_real_landslides_give_labelled_tiles_split_by_scene(real_subset):
    data = {**DATA, "folder": {**DATA["folder"], "images_dir": str(real_subset / "images"), "masks_dir": str(real_subset / "masks")}}
    out = _run(data)
    index = out["tile_index"]
    assert list(index.columns[:8]) == ["tile_id", "scene_id", "source", "row", "col", "height", "width", "split"]
    assert set(index["landslide"]) == {0, 1}  # positive and negative tiles
    assert set(index["split"]) == {"train", "test"}
    train_scenes = set(index.loc[index.split == "train", "scene_id"])
    assert not train_scenes & set(index.loc[index.split == "test", "scene_id"])
    assert (index.groupby("source")["split"].nunique() == 2).all()  # stratified: both splits per source
    # Labels agree with the masks; test tiles stitch back to the original mask.
    for tile in index.itertuples():
        mask = out["tile_masks"][tile.tile_id]()
        valid = mask[mask != 255]
        assert tile.landslide == int((valid == 1).mean() >= 0.01)
    scene_id = index.loc[index.split == "test", "scene_id"].iloc[0]
    original = cv2.imread(str(real_subset / "masks" / f"{scene_id}.png"), cv2.IMREAD_GRAYSCALE)
    tiles = index[index.scene_id == scene_id]
    stitched = stitch_mean(
        [(TileWindow(t.row, t.col, t.height, t.width), out["tile_masks"][t.tile_id]()) for t in tiles.itertuples()],
        *original.shape,
    )
    np.testing.assert_array_equal(stitched.astype(np.uint8), (original == 255).astype(np.uint8))


def _folder(tmp_path, n=3, size=(40, 50)):
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(tmp_path / "images" / f"a_{i}.png"), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        mask = np.zeros(size, np.uint8)
        mask[5:15, 5:25] = 255
        cv2.imwrite(str(tmp_path / "masks" / f"a_{i}.png"), mask)
    return {**DATA, "tile_size": 32, "folder": {**DATA["folder"], "images_dir": str(tmp_path / "images"), "masks_dir": str(tmp_path / "masks")}}


def test_small_folder_gives_every_tile_an_image_a_mask_and_a_label_that_agrees(tmp_path):
    data = _folder(tmp_path)
    out = _run(data)
    index = out["tile_index"]
    assert set(index["landslide"]) == {0, 1} and set(index["split"]) == {"train", "test"}
    assert set(out["tiles"]) == set(out["tile_masks"]) == set(index["tile_id"])
    for tile in index.itertuples():
        assert out["tiles"][tile.tile_id]().shape == (32, 32, 3)
        mask = out["tile_masks"][tile.tile_id]()
        valid = mask[mask != 255]
        assert tile.landslide == int((valid == 1).mean() >= data["label_min_fraction"])


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda d: (d / "masks" / "a_1.png").unlink(), "a_1.png"),
        (lambda d: (d / "images" / "a_2.png").write_bytes(b"not a png"), "a_2.png"),
        (lambda d: cv2.imwrite(str(d / "masks" / "a_0.png"), np.zeros((10, 10), np.uint8)), "a_0.png"),
        (lambda d: cv2.imwrite(str(d / "masks" / "a_0.png"), np.full((40, 50), 7, np.uint8)), "a_0.png"),
        (lambda d: [p.unlink() for p in (d / "images").iterdir()], "data.folder.images_dir"),
    ],
    ids=["mask missing", "unreadable image", "mask of another size", "mask values match no class", "no images"],
)
def test_bad_input_is_named_and_nothing_is_returned(tmp_path, breakage, message):
    data = _folder(tmp_path)
    breakage(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=message.replace(".", r"\.")):
        load_scenes(data, ["landslide"], 0)


def test_bad_source_and_missing_dirs_name_the_parameter(tmp_path):
    with pytest.raises(ValueError, match="data.source"):
        load_scenes({**DATA, "source": "s3"}, ["landslide"], 0)
    with pytest.raises(ValueError, match="data.folder.images_dir"):
        load_scenes(DATA, ["landslide"], 0)


def test_synthetic_source_is_seeded():
    data = {**DATA, "source": "synthetic", "tile_size": 32}
    first, second = load_scenes(data, ["landslide"], 5), load_scenes(data, ["landslide"], 5)
    assert all(np.array_equal(_image(first[k]), _image(second[k])) for k in first)
    scenes = split_scene_table(first, data, 5)
    index, tiles, masks = tile_scenes(first, scenes, data, ["landslide"])
    assert set(tiles) == set(masks) == set(index["tile_id"])
    assert isinstance(index, pd.DataFrame)


def _geotiff_folder(tmp_path, n=3, size=(40, 50)):
    """uint16 4-band GeoTIFFs with nodata=0 over a corner block, and masks that mark a landslide
    both inside that block (where the image has no data) and in the valid part."""
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    nodata = np.zeros(size, bool)
    nodata[:20, :24] = True
    for i in range(n):
        bands = rng.integers(1000, 4000, (4, *size), dtype=np.uint16)
        bands[:, nodata] = 0
        with rasterio.open(
            tmp_path / "images" / f"g_{i}.tif", "w", driver="GTiff", height=size[0], width=size[1],
            count=4, dtype="uint16", nodata=0, crs="EPSG:32648",
            transform=Affine(1, 0, 500000 + 100 * i, 0, -1, 3000000),
        ) as dst:
            dst.write(bands)
        mask = np.zeros(size, np.uint8)
        mask[2:14, 2:20] = 255   # only in the nodata block: must never count
        mask[28:38, 34:48] = 255  # in valid data: must still count
        cv2.imwrite(str(tmp_path / "masks" / f"g_{i}.png"), mask)
    data = {**DATA, "tile_size": 32, "folder": {**DATA["folder"], "images_dir": str(tmp_path / "images"), "masks_dir": str(tmp_path / "masks")}}
    return data, nodata, mask


def test_geotiff_nodata_is_ignored_in_tile_masks_and_labels(tmp_path):
    data, nodata, mask = _geotiff_folder(tmp_path)
    out = _run(data)
    index = out["tile_index"]
    expected = np.where(nodata, 255, (mask == 255).astype(np.uint8))  # the image decides
    assert set(index["landslide"]) == {0, 1}
    for tile in index.itertuples():
        window = TileWindow(tile.row, tile.col, tile.height, tile.width)
        tile_mask = out["tile_masks"][tile.tile_id]()
        want = cut_tile(expected, window, 32, pad_value=255)
        np.testing.assert_array_equal(tile_mask, want, err_msg=tile.tile_id)
        inside = nodata[tile.row : tile.row + tile.height, tile.col : tile.col + tile.width]
        image = out["tiles"][tile.tile_id]()[: tile.height, : tile.width]
        assert (image[inside] == 0).all()
        valid = want[want != 255]
        assert tile.landslide == int(valid.size > 0 and (valid == 1).mean() >= 0.01), tile.tile_id
    # the tile over the nodata block sees a landslide in the mask file but no data: negative
    assert index.loc[(index.row == 0) & (index.col == 0), "landslide"].eq(0).all()
    scenes = split_scene_table(load_scenes(data, ["landslide"], 0), data, 0)
    assert scenes["crs"].str.contains("32648").all()
    assert [json.loads(t)[2] for t in scenes["transform"]] == [500000.0, 500100.0, 500200.0]


def test_all_nodata_geotiff_names_the_file(tmp_path):
    data, nodata, _ = _geotiff_folder(tmp_path)
    with rasterio.open(tmp_path / "images" / "g_1.tif", "r+") as dst:
        dst.write(np.zeros((4, *nodata.shape), np.uint16))
    with pytest.raises(ValueError, match=r"g_1\.tif.*nodata"):
        load_scenes(data, ["landslide"], 0)


@pytest.mark.parametrize(
    "key, value", [("rgb_bands", [5, 2, 1]), ("rgb_bands", [1, 2]), ("stretch_percentiles", [98, 2]), ("stretch_percentiles", None)]
)
def test_bad_band_and_stretch_parameters_are_named(tmp_path, key, value):
    data, _, _ = _geotiff_folder(tmp_path)
    data = {**data, "folder": {**data["folder"], key: value}}
    with pytest.raises(ValueError, match=rf"data\.folder\.{key}"):
        load_scenes(data, ["landslide"], 0)


def test_stretch_percentiles_reach_the_reader(tmp_path):
    data, nodata, _ = _geotiff_folder(tmp_path, n=2)
    narrow = load_scenes(data, ["landslide"], 0)
    wide = load_scenes({**data, "folder": {**data["folder"], "stretch_percentiles": [0.0, 100.0]}}, ["landslide"], 0)
    # a full-range stretch saturates only the extreme valid values, the 2..98 one saturates ~2% each
    share = lambda scenes: (_image(scenes["g_0"])[~nodata] == 255).mean()  # noqa: E731
    assert share(wide) < 0.01 < share(narrow)


def _png_folder(tmp_path, images: dict[str, np.ndarray]) -> dict:
    """A folder source of 8-bit PNG scenes, each with an empty mask."""
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    for name, image in images.items():
        cv2.imwrite(str(tmp_path / "images" / f"{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(tmp_path / "masks" / f"{name}.png"), np.zeros(image.shape[:2], np.uint8))
    return {**DATA, "folder": {**DATA["folder"], "images_dir": str(tmp_path / "images"), "masks_dir": str(tmp_path / "masks")}}


@pytest.mark.parametrize("radiometry, same", [("stretch", True), ("as_read", False)])
def test_radiometry_stretch_gives_two_sensors_of_one_ground_the_same_scene(tmp_path, radiometry, same):
    ground = np.random.default_rng(0).integers(0, 256, (48, 48, 3)).astype(np.float64)
    bright = ground.astype(np.uint8)
    # the same ground through a darker sensor with a green cast (bijie beside sichuan)
    dark = (ground * [0.4, 0.5, 0.35] + [30, 50, 35]).astype(np.uint8)
    data = _png_folder(tmp_path, {"a_bright": bright, "b_dark": dark})
    data["folder"]["radiometry"] = radiometry
    scenes = load_scenes(data, ["landslide"], 0)
    difference = np.abs(_image(scenes["a_bright"]).astype(int) - _image(scenes["b_dark"]).astype(int)).max()
    assert bool(difference <= 3) == same  # rounding of the dark sensor's coarser grey levels
    if radiometry == "as_read":
        np.testing.assert_array_equal(_image(scenes["b_dark"]), dark)
