"""build_landslide_inventory: the test scenes' predictions as GeoPackage layers, with MLflow totals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from wsss_project.errors import UserInputError
from wsss_project.geospatial.inventory import GEOREFERENCED_LAYER, PIXEL_LAYER
from wsss_project.pipelines.evaluation.nodes import build_landslide_inventory

PIXEL_M = 10.0
INVENTORY = {"window_size": 24, "min_area": {"m2": 0.0, "px": 0.0}}
UTM_TRANSFORM = [PIXEL_M, 0.0, 600_000.0, 0.0, -PIXEL_M, 5_100_000.0]
ROTATED = [PIXEL_M * np.cos(0.3), -PIXEL_M * np.sin(0.3), 600_000.0,
           PIXEL_M * np.sin(0.3), PIXEL_M * np.cos(0.3), 5_100_000.0]  # rotated, north-down


def _scenes() -> pd.DataFrame:
    rows = [
        ("utm", 40, 50, "EPSG:32632", UTM_TRANSFORM, "test"),
        ("rotated", 30, 60, "EPSG:32633", ROTATED, "test"),  # another CRS, same layer
        ("png", 35, 45, None, None, "test"),
        ("train_scene", 40, 40, "EPSG:32632", UTM_TRANSFORM, "train"),
    ]
    return pd.DataFrame(
        [{"scene_id": s, "height": h, "width": w, "crs": crs, "transform": json.dumps(t), "split": split,
          "source": "synthetic"} for s, h, w, crs, t, split in rows]
    )


def _predictions(scenes: pd.DataFrame) -> dict[str, np.ndarray]:
    """Binary predictions as stored (0/255): squares of many sizes, some across the 24-pixel windows' seams."""
    out = {}
    for k, scene in enumerate(scenes.itertuples()):
        mask = np.zeros((scene.height, scene.width), np.uint8)
        mask[2:4, 2:4] = 255
        mask[10 + k : 30, 15:40 - k] = 255
        out[scene.scene_id] = mask
    return out


def test_the_inventory_of_the_test_scenes_has_their_areas_and_totals(caplog):
    scenes = _scenes()
    predictions = _predictions(scenes)
    loaders = {key: (lambda a=array: a) for key, array in predictions.items()}  # partitions load lazily
    layers, totals = build_landslide_inventory(loaders, {}, scenes, INVENTORY, ["landslide"])
    georeferenced, pixel = layers[GEOREFERENCED_LAYER], layers[PIXEL_LAYER]
    assert set(georeferenced["scene_id"]) == {"utm", "rotated"} and set(pixel["scene_id"]) == {"png"}
    # scenes of two CRSs share the lon/lat layer, each measured in its own CRS
    assert georeferenced.crs == "EPSG:4326" and pixel.crs is None
    assert georeferenced.groupby("scene_id")["area_crs"].unique().map(list).to_dict() == {
        "utm": ["EPSG:32632"], "rotated": ["EPSG:32633"]}
    for scene_id, frame, column, pixel_area in (("utm", georeferenced, "area_m2", PIXEL_M**2),
                                                ("rotated", georeferenced, "area_m2", PIXEL_M**2),
                                                ("png", pixel, "area_px", 1.0)):
        rows = frame[frame["scene_id"] == scene_id]
        assert rows[column].sum() == pytest.approx((predictions[scene_id] > 0).sum() * pixel_area, rel=1e-9)
        assert len(rows) == 2
    assert georeferenced["mean_probability"].isna().all() and "every mean_probability is NaN" in caplog.text
    assert totals == {
        "inventory.n_polygons": {"value": 6.0, "step": 0},
        "inventory.area_m2": {"value": pytest.approx(georeferenced["area_m2"].sum()), "step": 0},
        "inventory.area_px": {"value": float(pixel["area_px"].sum()), "step": 0},
    }


def test_mean_probability_comes_from_the_probability_raster_and_min_area_applies():
    scenes = _scenes()
    predictions = _predictions(scenes)
    probabilities = {key: np.where(mask > 0, 153, 0).astype(np.uint8) for key, mask in predictions.items()}  # 0.6
    inventory = {**INVENTORY, "min_area": {"m2": 5 * PIXEL_M**2, "px": 5.0}}  # drops the 4-pixel squares
    layers, totals = build_landslide_inventory(predictions, probabilities, scenes, inventory, ["landslide"])
    for frame in layers.values():
        assert frame["mean_probability"].tolist() == pytest.approx([0.6] * len(frame))
        assert (frame["n_pixels"] > 4).all()
    assert totals["inventory.n_polygons"]["value"] == 3.0


def test_stale_inputs_and_bad_parameters_are_named():
    scenes = _scenes()
    predictions = _predictions(scenes)
    wrong_bands = {key: np.zeros((2, *mask.shape), np.uint8) for key, mask in predictions.items()}
    with pytest.raises(UserInputError, match=r"`prediction_probabilities` of utm has 2 band\(s\), expected 1"):
        build_landslide_inventory(predictions, wrong_bands, scenes, INVENTORY, ["landslide"])
    for stale in (predictions["utm"][:-1], np.pad(predictions["utm"], ((0, 0), (0, 1)))):
        with pytest.raises(UserInputError, match=r"`predictions` of utm is \(\d+, \d+\), its scene is \(40, 50\)"):
            build_landslide_inventory({**predictions, "utm": stale}, {}, scenes, INVENTORY, ["landslide"])
    with pytest.raises(UserInputError, match="inventory.min_area"):
        build_landslide_inventory(predictions, {}, scenes, {**INVENTORY, "min_area": {"m2": 1.0}}, ["landslide"])


def test_a_multi_class_inventory_reads_each_class_band_of_the_stored_probabilities():
    """Stored multi-class probabilities hold background first (prediction_rasters): class k's polygons
    take band k, not band k - 1."""
    scenes = _scenes().iloc[[0]]
    classes = np.zeros((40, 50), np.uint8)
    classes[5:15, 5:15], classes[20:30, 20:40] = 1, 2
    bands = np.stack([np.full(classes.shape, 10, np.uint8), np.full(classes.shape, 51, np.uint8),
                      np.full(classes.shape, 204, np.uint8)])  # background, class 1 (0.2), class 2 (0.8)
    layers, _ = build_landslide_inventory({"utm": classes}, {"utm": bands}, scenes, INVENTORY, ["a", "b"])
    frame = layers[GEOREFERENCED_LAYER].set_index("class_name")
    assert frame.loc["a", "mean_probability"] == pytest.approx(0.2)
    assert frame.loc["b", "mean_probability"] == pytest.approx(0.8)
    with pytest.raises(UserInputError, match=r"has 2 band\(s\), expected 3 for 2 class"):
        build_landslide_inventory({"utm": classes}, {"utm": bands[1:]}, scenes, INVENTORY, ["a", "b"])
