"""The landslide inventory's geometry: windows and seams, areas in every kind of CRS, min_area."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from shapely.geometry import box

from wsss_project.errors import UserInputError
from wsss_project.geospatial.inventory import (
    GEOREFERENCED_COLUMNS,
    GEOREFERENCED_LAYER,
    PIXEL_COLUMNS,
    PIXEL_LAYER,
    inventory_layers,
    scene_components,
    scene_georeference,
    scene_inventory,
)

UTM = "EPSG:32633"
PIXEL_M = 10.0
NORTH_UP = [PIXEL_M, 0.0, 500_000.0, 0.0, -PIXEL_M, 5_000_000.0]
KEEP_ALL = {"m2": 0.0, "px": 0.0}


def _reader(array: np.ndarray):
    return lambda w: array[..., w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width]


def _blobs(height: int, width: int, n_classes: int, seed: int) -> np.ndarray:
    """Random class-index mask with components of many shapes and sizes (smoothed noise, thresholded)."""
    rng = np.random.default_rng(seed)
    noise = rng.random((height // 4 + 1, width // 4 + 1))
    field = np.kron(noise, np.ones((4, 4)))[:height, :width] + 0.35 * rng.random((height, width))
    return np.digitize(field, np.linspace(0.55, 1.2, n_classes + 1)[:-1]).astype(np.uint8) * (field > 0.55)


def _components(mask, probabilities, window_size, n_classes=1):
    return scene_components("s", _reader(mask), None if probabilities is None else _reader(probabilities),
                            mask.shape[0], mask.shape[1], n_classes, window_size)


def _inventory(mask, georef, probabilities=None, window_size=1024, min_area=KEEP_ALL, classes=("landslide",)):
    components = _components(mask, probabilities, window_size, len(classes))
    return scene_inventory("s", components, georef, list(classes), min_area)


def _key(component):
    return (component.class_index, component.geometry.bounds, component.n_pixels)


@pytest.mark.parametrize("n_classes", [1, 3])
def test_a_scene_read_in_windows_gives_the_polygons_of_one_read(n_classes):
    height, width = 96, 120
    mask = _blobs(height, width, n_classes, seed=n_classes)
    probabilities = np.random.default_rng(7).integers(0, 256, (n_classes, height, width), dtype=np.uint8)
    whole = sorted(_components(mask, probabilities, 4096, n_classes), key=_key)
    assert sum(c.n_pixels for c in whole) == int((mask > 0).sum())
    for window_size in (60, 48, 7):  # 4 windows (2 x 2 seams), 6 unequal, many small ones
        windowed = sorted(_components(mask, probabilities, window_size, n_classes), key=_key)
        assert len(windowed) == len(whole)
        for one, cut in zip(whole, windowed, strict=True):
            assert (cut.class_index, cut.n_pixels, cut.probability_sum) == (one.class_index, one.n_pixels,
                                                                            one.probability_sum)
            assert cut.geometry.geom_type == "Polygon" and cut.geometry.equals(one.geometry)


def test_a_component_joined_only_through_other_windows_is_one_polygon():
    # A U: its two arms lie in the top windows and meet only in the bottom ones.
    mask = np.zeros((40, 40), np.uint8)
    mask[2:38, 5:10] = mask[2:38, 30:35] = mask[30:38, 5:35] = 1
    probabilities = np.full((1, 40, 40), 200, np.uint8)
    (component,) = _components(mask, probabilities, 20)
    assert component.n_pixels == int(mask.sum())
    assert component.geometry.area == mask.sum()
    assert component.probability_sum == 200 * mask.sum()
    # diagonal neighbours are separate components (4-connectivity), whichever window they fall in
    diagonal = np.zeros((40, 40), np.uint8)
    diagonal[19, 19] = diagonal[20, 20] = 1
    assert len(_components(diagonal, None, 20)) == len(_components(diagonal, None, 40)) == 2


def test_the_total_area_is_the_predicted_pixels_times_the_pixel_area_and_polygons_lie_in_the_scene():
    mask = _blobs(80, 100, 1, seed=3)
    georef = scene_georeference("s", UTM, NORTH_UP, 80, 100)
    layer, frame = _inventory(mask, georef, window_size=32)
    assert layer == GEOREFERENCED_LAYER and list(frame.columns) == [*GEOREFERENCED_COLUMNS, "geometry"]
    assert frame.crs == "EPSG:4326" and (frame["area_crs"] == UTM).all()
    assert frame["area_m2"].sum() == pytest.approx(mask.sum() * PIXEL_M**2, rel=1e-9)
    assert frame["n_pixels"].sum() == mask.sum()
    native = frame.to_crs(UTM)
    assert native.within(georef.footprint().buffer(1e-3)).all()  # 1 mm: the round trip through lon/lat
    # the centroid columns are the polygons' centroids in lon/lat
    centroids = gpd.GeoSeries(native.centroid, crs=UTM).to_crs("EPSG:4326")
    assert np.allclose(frame["centroid_lon"], centroids.x) and np.allclose(frame["centroid_lat"], centroids.y)
    assert frame["mean_probability"].isna().all()  # no probabilities given


@pytest.mark.parametrize(
    "transform, pixel_perimeter",
    [
        (Affine.translation(500_000, 5_000_000) @ Affine.rotation(30) @ Affine.scale(PIXEL_M, -PIXEL_M), 4 * PIXEL_M),
        (Affine(PIXEL_M, 3.0, 500_000, 0.0, -PIXEL_M, 5_000_000), 2 * (PIXEL_M + math.hypot(3.0, PIXEL_M))),
    ],
    ids=["rotated", "sheared"],
)
def test_a_rotated_or_sheared_transform_gives_true_areas_and_perimeters(transform, pixel_perimeter):
    mask = np.zeros((30, 30), np.uint8)
    mask[3, 3] = 1  # one pixel: its parallelogram
    mask[10:20, 12:25] = 1
    georef = scene_georeference("s", UTM, list(transform)[:6], 30, 30)
    _, frame = _inventory(mask, georef, window_size=16)
    assert frame["area_m2"].tolist() == pytest.approx([PIXEL_M**2, 130 * abs(transform.determinant)])
    assert frame["perimeter_m"].iloc[0] == pytest.approx(pixel_perimeter)
    assert frame.to_crs(UTM).within(georef.footprint().buffer(1e-3)).all()


def test_a_scene_without_crs_is_measured_in_pixels_without_lon_lat():
    mask = _blobs(50, 70, 1, seed=5)
    for transform in (None, NORTH_UP):  # a transform without CRS is ignored: its units are unknown
        georef = scene_georeference("s", None, transform, 50, 70)
        layer, frame = _inventory(mask, georef, window_size=20)
        assert layer == PIXEL_LAYER and list(frame.columns) == [*PIXEL_COLUMNS, "geometry"]
        assert frame.crs is None
        assert frame["area_px"].sum() == mask.sum() and (frame["area_px"] == frame["n_pixels"]).all()
        assert frame.within(box(0, 0, 70, 50)).all()


def test_a_geographic_scene_is_measured_in_its_utm_zone():
    degrees = 1e-4
    transform = [degrees, 0.0, 15.0, 0.0, -degrees, 45.0]
    mask = _blobs(60, 60, 1, seed=9)
    georef = scene_georeference("s", "EPSG:4326", transform, 60, 60)
    _, frame = _inventory(mask, georef, window_size=25)
    assert (frame["area_crs"] == "EPSG:32633").all()  # 15° E, northern hemisphere
    footprint_m2 = gpd.GeoSeries([georef.footprint()], crs="EPSG:4326").to_crs("EPSG:32633").area.iloc[0]
    assert frame["area_m2"].sum() == pytest.approx(mask.sum() * footprint_m2 / mask.size, rel=0.01)
    assert frame["centroid_lon"].between(15.0, 15.006).all() and frame["centroid_lat"].between(44.994, 45.0).all()


def test_a_crs_in_feet_gives_square_metres():
    mask = np.zeros((10, 10), np.uint8)
    mask[2:6, 2:5] = 1
    foot = 1200 / 3937  # US survey foot, in metres
    georef = scene_georeference("s", "EPSG:2227", [10.0, 0, 6_000_000, 0, -10.0, 2_000_000], 10, 10)
    _, frame = _inventory(mask, georef)
    assert frame["area_m2"].iloc[0] == pytest.approx(12 * (10 * foot) ** 2)
    assert frame["perimeter_m"].iloc[0] == pytest.approx(14 * 10 * foot)


def test_min_area_drops_exactly_the_smaller_components_judged_whole():
    mask = np.zeros((40, 40), np.uint8)
    mask[1:2, 1:2] = 1     # 1 px
    mask[1:3, 10:12] = 1   # 4 px
    mask[10:13, 1:4] = 1   # 9 px
    mask[18:22, 18:22] = 1  # 16 px, cut into four pieces of 4 by the windows' seams
    utm = scene_georeference("s", UTM, NORTH_UP, 40, 40)
    _, frame = _inventory(mask, utm, window_size=20, min_area={"m2": 4 * PIXEL_M**2, "px": 0.0})
    assert sorted(frame["n_pixels"]) == [4, 9, 16]
    assert frame["polygon_id"].tolist() == ["s:1", "s:2", "s:3"]
    pixels = scene_georeference("s", None, None, 40, 40)
    _, frame = _inventory(mask, pixels, window_size=20, min_area={"m2": 0.0, "px": 9.5})
    assert frame["n_pixels"].tolist() == [16]


def test_mean_probability_is_the_class_probability_averaged_over_the_polygon():
    mask = np.zeros((20, 20), np.uint8)
    mask[2:8, 2:8] = 1
    mask[12:18, 12:18] = 2
    probabilities = np.zeros((2, 20, 20), np.uint8)
    probabilities[0, 2:8, 2:8] = 51  # 0.2
    probabilities[0, 2:5, 2:8] = 255  # half the polygon at 1.0 -> mean 0.6
    probabilities[1, 12:18, 12:18] = 102  # 0.4 for class 2 (class 1's band there is 0)
    georef = scene_georeference("s", None, None, 20, 20)
    _, frame = _inventory(mask, georef, probabilities, window_size=10, classes=("landslide", "debris"))
    assert frame["class_name"].tolist() == ["landslide", "debris"]
    assert frame["mean_probability"].tolist() == pytest.approx([0.6, 0.4])


def test_bad_georeferencing_is_an_error_naming_the_scene():
    with pytest.raises(UserInputError, match="scene a: cannot read its CRS"):
        scene_georeference("a", "EPSG:not-a-code", NORTH_UP, 10, 10)
    with pytest.raises(UserInputError, match="scene b: its transform .* degenerate"):
        scene_georeference("b", UTM, [10.0, 0, 0, 0, 0, 0], 10, 10)
    with pytest.raises(UserInputError, match="scene c: its transform .* is not the 6 coefficients"):
        scene_georeference("c", UTM, "[10.0, 0, 0, 0, -10.0]", 10, 10)


def test_the_geopackage_layers_are_always_both_with_their_columns():
    empty = np.zeros((10, 10), np.uint8)
    georeferenced = _inventory(empty, scene_georeference("a", UTM, NORTH_UP, 10, 10))
    full = np.ones((10, 10), np.uint8)
    pixel = _inventory(full, scene_georeference("b", None, None, 10, 10))
    layers = inventory_layers([georeferenced, pixel])
    assert set(layers) == {GEOREFERENCED_LAYER, PIXEL_LAYER}
    assert len(layers[GEOREFERENCED_LAYER]) == 0 and layers[GEOREFERENCED_LAYER].crs == "EPSG:4326"
    assert list(layers[GEOREFERENCED_LAYER].columns) == [*GEOREFERENCED_COLUMNS, "geometry"]
    assert layers[PIXEL_LAYER]["area_px"].tolist() == [100.0]
