"""End-to-end on a folder of GeoTIFF and PNG scenes: georeferenced scenes get cloud-optimised GeoTIFF
predictions and probabilities with their CRS, transform and nodata mask; PNG scenes keep PNG outputs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from project_files import latest_version, run_project
from test_run import TINY_PARAMS

from wsss_project.datasets.png_array import read_png
from wsss_project.prediction_rasters import BINARY_DECISION_LEVEL

HEIGHT, WIDTH = 192, 256
CRS = "EPSG:32645"  # WGS 84 / UTM 45N (Nepal): metres
NODATA_ROWS, NODATA_COLS = slice(150, None), slice(200, None)  # a corner without data in every GeoTIFF
OUTPUTS = ("predictions", "prediction_probabilities", "supervised_predictions", "supervised_prediction_probabilities")


def _transform(k: int) -> Affine:
    return Affine(2.5, 0.0, 300000.0 + 1000.0 * k, 0.0, -2.5, 3100000.0 - 500.0 * k)


def _scene(rng, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Green noisy ground with a brown disc 'landslide' (mask 255 there), RGB uint8."""
    image = np.clip(rng.normal((60, 120, 50), 12, (HEIGHT, WIDTH, 3)), 0, 255)
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.circle(mask, (70 + 20 * k, 80), 40, 255, -1)
    image[mask > 0] = np.clip(rng.normal((150, 110, 80), 12, (int((mask > 0).sum()), 3)), 0, 255)
    return image, mask


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> tuple[Path, Path]:
    """Three 4-band uint16 GeoTIFFs (source `geo`: UTM, 2.5 m pixels, nodata 0 in a corner) and two PNGs
    (source `plain`): stratified by source, two GeoTIFFs and one PNG become test scenes."""
    root = tmp_path_factory.mktemp("mixed")
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        image, mask = _scene(rng, k)
        bands = np.concatenate([image, image[..., :1]], axis=2).transpose(2, 0, 1).astype(np.uint16) * 10 + 1
        bands[:, NODATA_ROWS, NODATA_COLS] = 0
        with rasterio.open(images / f"geo_{k:03d}.tif", "w", driver="GTiff", height=HEIGHT, width=WIDTH, count=4,
                           dtype="uint16", crs=CRS, transform=_transform(k), nodata=0) as dst:
            dst.write(bands)
        cv2.imwrite(str(masks / f"geo_{k:03d}.png"), mask)
    for k in range(2):
        image, mask = _scene(rng, k)
        cv2.imwrite(str(images / f"plain_{k:03d}.png"), image.astype(np.uint8)[:, :, ::-1])
        cv2.imwrite(str(masks / f"plain_{k:03d}.png"), mask)
    return images, masks


@pytest.fixture(scope="module")
def run_data(mixed_folder, module_project_copy) -> Path:
    images, masks = mixed_folder
    params = copy.deepcopy(TINY_PARAMS)
    params["data"] = {"source": "folder", "folder": {"images_dir": str(images), "masks_dir": str(masks)},
                      "tile_size": 128, "split": {"test_fraction": 0.5}}
    return run_project(module_project_copy, params)



def _test_scenes(data: Path) -> pd.DataFrame:
    scenes = pd.read_parquet(latest_version(data / "02_intermediate" / "scenes.parquet"))
    return scenes[scenes.split == "test"]


def test_georeferenced_test_scenes_get_cloud_optimised_geotiffs_with_their_crs_transform_and_nodata(run_data):
    geo = _test_scenes(run_data).query("source == 'geo'")
    assert len(geo) == 2
    for scene in geo.itertuples():
        k = int(scene.scene_id.split("_")[1])
        expected_valid = np.ones((HEIGHT, WIDTH), bool)
        expected_valid[NODATA_ROWS, NODATA_COLS] = False
        rasters = {}
        for output in OUTPUTS:
            folder = run_data / "07_model_output" / output
            assert not (folder / f"{scene.scene_id}.png").exists()
            with rasterio.open(folder / f"{scene.scene_id}.tif") as src:
                assert src.crs.to_string() == CRS and src.transform == _transform(k)
                assert (src.height, src.width, src.count, src.dtypes[0]) == (HEIGHT, WIDTH, 1, "uint8")
                assert src.profile["tiled"] and src.compression == rasterio.enums.Compression.deflate
                assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
                np.testing.assert_array_equal(src.read_masks(1) > 0, expected_valid)
                rasters[output] = src.read(1)
            assert not rasters[output][~expected_valid].any(), "pixels without data hold 0"
        for prefix in ("", "supervised_"):
            prediction, probability = rasters[f"{prefix}predictions"], rasters[f"{prefix}prediction_probabilities"]
            assert set(np.unique(prediction)) <= {0, 255}
            np.testing.assert_array_equal(prediction == 255, probability >= BINARY_DECISION_LEVEL)


def test_png_scenes_keep_png_outputs_and_the_report_measures_each_valid_test_pixel_once(run_data):
    plain = _test_scenes(run_data).query("source == 'plain'")
    assert len(plain) == 1
    for output in OUTPUTS:
        scene_id = plain.scene_id.iloc[0]
        assert read_png(run_data / "07_model_output" / output / f"{scene_id}.png").shape == (HEIGHT, WIDTH)
        assert not (run_data / "07_model_output" / output / f"{scene_id}.tif").exists()
    metrics = json.loads(latest_version(run_data / "08_reporting" / "metrics.json").read_text())
    nodata = (HEIGHT - 150) * (WIDTH - 200)
    for stage in ("prediction", "supervised_reference"):
        # Every test pixel once, the GeoTIFFs' nodata corners left out (their masks are 255 there).
        assert metrics[stage]["pixels"] == 3 * HEIGHT * WIDTH - 2 * nodata
        assert set(metrics[stage]["per_source"]) == {"geo", "plain"}


def test_the_inventory_areas_add_up_to_the_predicted_pixels_and_its_polygons_lie_in_their_scenes(run_data):
    import geopandas as gpd
    from shapely.geometry import box

    inventory = latest_version(run_data / "07_model_output" / "landslide_inventory.gpkg")
    georeferenced = gpd.read_file(inventory, layer="polygons_wgs84")
    pixel = gpd.read_file(inventory, layer="polygons_pixel")
    folder = run_data / "07_model_output" / "predictions"
    for scene in _test_scenes(run_data).itertuples():
        if scene.source == "geo":
            with rasterio.open(folder / f"{scene.scene_id}.tif") as src:
                predicted, pixel_area, bounds = int((src.read(1) == 255).sum()), abs(src.transform.determinant), src.bounds
            rows = georeferenced[georeferenced.scene_id == scene.scene_id]
            assert rows["area_m2"].sum() == pytest.approx(predicted * pixel_area, rel=0.01)
            # back in the scene's CRS, every polygon lies inside the scene (a millimetre for reprojection)
            footprint = box(*bounds).buffer(1e-3)
            assert rows.to_crs(CRS).geometry.within(footprint).all()
        else:
            predicted = int((read_png(folder / f"{scene.scene_id}.png") == 255).sum())
            rows = pixel[pixel.scene_id == scene.scene_id]
            assert rows["area_px"].sum() == predicted
            assert rows.geometry.within(box(0, 0, WIDTH, HEIGHT)).all()
        assert predicted > 0 and len(rows) > 0, "the check needs a predicted landslide"
