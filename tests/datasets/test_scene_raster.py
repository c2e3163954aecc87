"""The per-scene raster dataset (predictions, probabilities): GeoTIFF (COG) or PNG by georeferencing,
written window by window and atomically, read back window by window."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from kedro.io import DatasetError

from wsss_project.datasets import SceneRasterDataset, SceneRasterPartitions
from wsss_project.datasets.scene_raster import (
    ArraySceneRaster,
    FileSceneRaster,
    Georeference,
    StreamedSceneRaster,
    scene_array,
    write_scene_raster,
)
from wsss_project.imagery.tiling import TileWindow

UTM = Georeference("EPSG:32645", (10.0, 0.0, 500000.0, 0.0, -10.0, 3000000.0))
H, W = 300, 400
BLOCK = 128  # smaller than the scene, so the COG gets overviews


def _scene(count: int = 1) -> np.ndarray:
    return np.random.default_rng(count).integers(0, 256, (count, H, W), dtype=np.uint8)


def _nodata() -> np.ndarray:
    valid = np.ones((H, W), bool)
    valid[250:, 300:] = False  # a corner without data, far from the first blocks
    return valid


def _streamed(array: np.ndarray, georeference=UTM, valid=None, tile=100, fail_after=None, names=()) -> StreamedSceneRaster:
    """The scene as tile x tile blocks (column-major, to show order does not matter); raises after
    `fail_after` blocks when set."""
    def blocks():
        windows = [TileWindow(r, c, min(tile, H - r), min(tile, W - c)) for c in range(0, W, tile) for r in range(0, H, tile)]
        for k, w in enumerate(windows):
            if fail_after is not None and k == fail_after:
                raise RuntimeError("model crashed")
            yield w, array[:, w.row : w.row + w.height, w.col : w.col + w.width]

    validity = None if valid is None else (lambda w: valid[w.row : w.row + w.height, w.col : w.col + w.width])
    return StreamedSceneRaster(H, W, array.shape[0], blocks, georeference, validity, names)


def test_a_georeferenced_scene_is_a_tiled_compressed_cloud_optimised_geotiff_with_its_crs_transform_and_mask(tmp_path):
    array, valid = _scene(), _nodata()
    dataset = SceneRasterDataset(str(tmp_path / "s1"), block_size=BLOCK)
    dataset.save(_streamed(array, valid=valid, names=("landslide",)))
    assert [p.name for p in tmp_path.iterdir()] == ["s1.tif"]  # no temporary or staging file left
    with rasterio.open(tmp_path / "s1.tif") as src:
        assert src.crs.to_epsg() == 32645 and tuple(src.transform)[:6] == UTM.transform
        assert src.profile["tiled"] and src.block_shapes == [(BLOCK, BLOCK)]
        assert src.compression == rasterio.enums.Compression.deflate
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.overviews(1), "internal overviews"
        assert src.mask_flag_enums[0] == [rasterio.enums.MaskFlags.per_dataset] and src.nodata is None
        np.testing.assert_array_equal(src.read_masks(1) > 0, valid)
        assert src.descriptions == ("landslide",)
    loaded = dataset.load()
    assert loaded.shape == (H, W) and loaded.georeference == UTM and loaded.band_names == ("landslide",)
    expected = np.where(valid, array[0], 0)  # pixels without data hold 0
    np.testing.assert_array_equal(loaded.read(), expected)
    window = TileWindow(240, 290, 30, 40)  # across the nodata corner
    np.testing.assert_array_equal(loaded.read(window), expected[240:270, 290:330])
    np.testing.assert_array_equal(loaded.valid(window), valid[240:270, 290:330])
    np.testing.assert_array_equal(scene_array(loaded), expected)


def test_a_fully_valid_scene_has_no_mask_band_and_a_multi_band_raster_keeps_every_band(tmp_path):
    array = _scene(count=3)
    dataset = SceneRasterDataset(str(tmp_path / "p"), block_size=BLOCK, overview_resampling="average")
    dataset.save(_streamed(array, valid=np.ones((H, W), bool), names=("background", "a", "b")))
    with rasterio.open(tmp_path / "p.tif") as src:
        assert src.count == 3 and rasterio.enums.MaskFlags.per_dataset not in src.mask_flag_enums[0]
    loaded = dataset.load()
    assert loaded.valid(TileWindow(0, 0, 5, 5)) is None
    np.testing.assert_array_equal(loaded.read(), array)
    np.testing.assert_array_equal(np.concatenate([b for _, b in loaded.blocks()], axis=None).size, array.size)


def test_a_scene_without_georeferencing_is_a_png_and_loads_the_same(tmp_path):
    array = _scene()
    dataset = SceneRasterDataset(str(tmp_path / "plain"))
    dataset.save(_streamed(array, georeference=Georeference(None, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0))))
    assert [p.name for p in tmp_path.iterdir()] == ["plain.png"]
    loaded = dataset.load()
    assert loaded.georeference == Georeference() and loaded.valid(TileWindow(0, 0, 2, 2)) is None
    np.testing.assert_array_equal(loaded.read(TileWindow(10, 20, 30, 40)), array[0, 10:40, 20:60])
    # A bare array is a non-georeferenced scene too.
    dataset.save(array[0][:50, :60])
    assert dataset.load().shape == (50, 60)


def test_a_multi_band_raster_without_georeferencing_is_a_plain_tiff(tmp_path):
    array = _scene(count=3)
    path = write_scene_raster(tmp_path / "m", ArraySceneRaster(array))
    assert path.name == "m.tif"
    loaded = FileSceneRaster(path)
    assert loaded.georeference == Georeference() and loaded.count == 3
    np.testing.assert_array_equal(loaded.read(TileWindow(5, 6, 7, 8)), array[:, 5:12, 6:14])


def test_a_transform_alone_makes_a_geotiff_and_the_stale_png_of_the_scene_goes(tmp_path):
    dataset = SceneRasterDataset(str(tmp_path / "s"))
    dataset.save(ArraySceneRaster(_scene()[0]))
    dataset.save(ArraySceneRaster(_scene()[0], Georeference(None, (2.0, 0.0, 0.0, 0.0, -2.0, 100.0))))
    assert [p.name for p in tmp_path.iterdir()] == ["s.tif"]
    assert dataset.load().georeference.transform == (2.0, 0.0, 0.0, 0.0, -2.0, 100.0)


@pytest.mark.parametrize("georeference", [UTM, Georeference()], ids=["geotiff", "png"])
def test_a_write_that_fails_midway_leaves_the_previous_file_and_no_temporary(tmp_path, georeference):
    dataset = SceneRasterDataset(str(tmp_path / "s"), block_size=BLOCK)
    old = _scene()
    dataset.save(_streamed(old, georeference))
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(DatasetError, match="model crashed"):  # Kedro wraps what the stream raised
        dataset.save(_streamed(255 - old, georeference, fail_after=3))
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    np.testing.assert_array_equal(dataset.load().read(), old[0])


def test_blocks_must_cover_the_scene_once_with_the_declared_bands(tmp_path):
    dataset = SceneRasterDataset(str(tmp_path / "s"), block_size=BLOCK)
    gap = StreamedSceneRaster(H, W, 1, lambda: iter([(TileWindow(0, 0, H, W - 1), np.zeros((1, H, W - 1), np.uint8))]), UTM)
    with pytest.raises(DatasetError, match="each pixel must be written exactly once"):
        dataset.save(gap)
    outside = StreamedSceneRaster(H, W, 1, lambda: iter([(TileWindow(0, 1, H, W), np.zeros((1, H, W), np.uint8))]), UTM)
    with pytest.raises(DatasetError, match="outside"):
        dataset.save(outside)
    floats = StreamedSceneRaster(H, W, 1, lambda: iter([(TileWindow(0, 0, H, W), np.zeros((1, H, W)))]), UTM)
    with pytest.raises(DatasetError, match="expected uint8"):
        dataset.save(floats)
    assert list(tmp_path.iterdir()) == []


def test_bad_dataset_settings_are_named():
    with pytest.raises(DatasetError, match="block_size"):
        SceneRasterDataset("x", block_size=100)
    with pytest.raises(DatasetError, match="overview_resampling"):
        SceneRasterDataset("x", overview_resampling="median-ish")


def test_partitions_are_keyed_by_scene_id_whatever_the_format(tmp_path):
    folder = tmp_path / "predictions"
    partitions = SceneRasterPartitions(path=str(folder), dataset={"type": "wsss_project.datasets.SceneRasterDataset",
                                                                  "block_size": BLOCK})
    partitions.save({"geo": ArraySceneRaster(_scene()[0], UTM), "plain": ArraySceneRaster(_scene()[0])})
    assert sorted(p.name for p in folder.iterdir()) == ["geo.tif", "plain.png"]
    loaded = partitions.load()
    assert sorted(loaded) == ["geo", "plain"]
    readers = {key: load() for key, load in loaded.items()}
    assert all(isinstance(r, FileSceneRaster) for r in readers.values())
    assert readers["geo"].georeference == UTM and readers["plain"].georeference == Georeference()
    (folder / "plain.tif").write_bytes((folder / "geo.tif").read_bytes())
    partitions._invalidate_caches()
    with pytest.raises(DatasetError, match="both a .tif and a .png"):
        partitions.load()
    with pytest.raises(DatasetError, match="filename_suffix"):
        SceneRasterPartitions(path=str(folder), filename_suffix=".png")


def test_georeference_from_the_scenes_table_columns():
    assert Georeference.from_scene("EPSG:32645", "[10, 0, 5, 0, -10, 7]") == Georeference("EPSG:32645", (10, 0, 5, 0, -10, 7))
    assert Georeference.from_scene(None, "null") == Georeference() and not Georeference().is_georeferenced
    assert not Georeference(None, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)).is_georeferenced
    assert Georeference("EPSG:4326", None).is_georeferenced
