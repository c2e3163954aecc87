"""The landslide inventory: one polygon per connected component of each predicted class, with its
area, perimeter, centroid and mean probability, built window by window. This module owns the
GeoPackage layout (layers and columns below).

How it is built
- A scene is read in square windows (`window_size` pixels a side, row-major), so the raster memory
  is one window plus one row of labels (the seam above) and one column (the seam on the left).
- In each window, each class's pixels are labelled into 4-connected components (the connectivity
  of rasterio.features.shapes) and polygonised with `rasterio.features.shapes` under the window's
  transform. The polygons are built in *scene pixel coordinates* (the window transform of the
  identity: a translation by the window's offset): pixel edges then have integer
  coordinates, so the pieces of a component cut by a seam share their edges exactly and their union
  is the component's polygon. The scene's affine is applied once, after the merge (in CRS
  coordinates, the pieces' seam vertices would differ by rounding and leave slivers).
- Pieces of one class that are 4-adjacent across a seam are merged (union-find); their pixel counts
  and probability sums (integers) are added, so the mean probability is exact whatever the windows.
- `min_area` drops the merged components smaller than it (after the merge, so a component cut by
  seams is judged whole).

Areas and CRS (one GeoPackage for scenes of any CRS)
- A scene is georeferenced when it has a CRS and a (non-identity) transform. Its polygons go to
  layer `polygons_wgs84`, geometry in EPSG:4326 (so that scenes of different CRSs share one layer).
  Area and perimeter are computed *before* reprojecting: in the scene's CRS when it is projected
  (converted to metres by the CRS's axis unit, so a CRS in feet still gives m²), or, when it is
  geographic (degrees), in the UTM zone of the scene's footprint (`estimate_utm_crs`, one zone per
  scene). `area_crs` names the CRS they were computed in. A rotated or sheared transform is just an
  affine map: the areas are |det(transform)| per pixel, the perimeters its true lengths. The centroid
  is taken in that metric CRS, then given in lon/lat (EPSG:4326).
- A scene without CRS has no metres and no lon/lat: layer `polygons_pixel`, geometry in pixel
  coordinates (x = column, y = row growing downwards as in the image array, on pixel edges),
  area and perimeter in pixels. A transform without CRS is ignored (logged): its
  units are unknown. A CRS without transform (an identity transform, which the readers store as
  null) cannot place the scene: also pixel layer, logged.

Columns (units in the names)
- polygons_wgs84: polygon_id, scene_id, class_name, n_pixels, area_m2, perimeter_m, centroid_lon,
  centroid_lat, mean_probability, area_crs, geometry (EPSG:4326 polygon).
- polygons_pixel: polygon_id, scene_id, class_name, n_pixels, area_px, perimeter_px,
  mean_probability, geometry (pixel coordinates, no CRS).
`mean_probability` is the mean of the class's probability raster (uint8, 255 = 1) over the
polygon's pixels, in 0..1; NaN for every polygon when the run wrote no probabilities.
`polygon_id` is `<scene_id>:<n>`, n counting from 1 in (class, top row, left column) order.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio.features
import shapely
from affine import Affine
from pyproj import CRS
from pyproj.exceptions import CRSError
from rasterio.windows import Window
from shapely.geometry import box, shape

from wsss_project.contracts import PROBABILITY_MAX
from wsss_project.errors import UserInputError

logger = logging.getLogger(__name__)

GEOREFERENCED_LAYER = "polygons_wgs84"
PIXEL_LAYER = "polygons_pixel"
INVENTORY_LAYERS = (GEOREFERENCED_LAYER, PIXEL_LAYER)
WGS84 = "EPSG:4326"
AFFINE_COEFFICIENTS = ("a", "b", "c", "d", "e", "f")  # the scenes table's transform: x = a*col + b*row + c, y = d*col + e*row + f
CONNECTIVITY = 4  # rasterio.features.shapes' default; diagonal neighbours are separate polygons
NO_PIECE = -1  # seam arrays: no foreground pixel there

GEOREFERENCED_COLUMNS = {
    "polygon_id": "str", "scene_id": "str", "class_name": "str", "n_pixels": "int64",
    "area_m2": "float64", "perimeter_m": "float64", "centroid_lon": "float64", "centroid_lat": "float64",
    "mean_probability": "float64", "area_crs": "str",
}
PIXEL_COLUMNS = {
    "polygon_id": "str", "scene_id": "str", "class_name": "str", "n_pixels": "int64",
    "area_px": "float64", "perimeter_px": "float64", "mean_probability": "float64",
}
LAYER_COLUMNS = {GEOREFERENCED_LAYER: GEOREFERENCED_COLUMNS, PIXEL_LAYER: PIXEL_COLUMNS}
AREA_COLUMNS = {GEOREFERENCED_LAYER: "area_m2", PIXEL_LAYER: "area_px"}
MIN_AREA_KEYS = {GEOREFERENCED_LAYER: "m2", PIXEL_LAYER: "px"}  # inventory.min_area.<key> per layer

BlockReader = Callable[[Window], np.ndarray]


# --------------------------------------------------------------------------- georeference


@dataclass(frozen=True)
class Georeference:
    """Where a scene's pixels lie: its CRS (None = not georeferenced) and the affine map from pixel
    (column, row) to CRS (x, y) (the identity when not georeferenced)."""

    crs: CRS | None
    transform: Affine
    height: int
    width: int

    @property
    def layer(self) -> str:
        return GEOREFERENCED_LAYER if self.crs is not None else PIXEL_LAYER

    def footprint(self) -> shapely.Polygon:
        """The scene's extent in its CRS (pixel coordinates when not georeferenced)."""
        return to_scene_coordinates(box(0, 0, self.width, self.height), self.transform)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def scene_georeference(scene_id: str, crs: Any, transform: Any, height: int, width: int) -> Georeference:
    """The Georeference of a `scenes` row: `crs` a CRS string or null, `transform` the 6 affine
    coefficients (a, b, c, d, e, f), as a list or as the table's JSON text, or null."""
    if isinstance(transform, str):
        transform = json.loads(transform)
    if _missing(crs) or _missing(transform):
        if not _missing(transform):
            logger.warning("scene %s has a transform but no CRS: its inventory is in pixels", scene_id)
        elif not _missing(crs):
            logger.warning("scene %s has a CRS but no transform: its inventory is in pixels", scene_id)
        return Georeference(None, Affine.identity(), int(height), int(width))
    try:
        parsed = CRS.from_user_input(crs)
    except CRSError as err:
        raise UserInputError(f"scene {scene_id}: cannot read its CRS {crs!r}: {err}") from None
    if not (parsed.is_projected or parsed.is_geographic):
        raise UserInputError(
            f"scene {scene_id}: CRS {crs!r} is neither projected nor geographic; the inventory measures "
            "areas in metres in a projected CRS or in the UTM zone of a geographic one"
        )
    if len(transform) != len(AFFINE_COEFFICIENTS):
        raise UserInputError(f"scene {scene_id}: its transform {transform!r} is not the 6 coefficients {AFFINE_COEFFICIENTS}")
    affine = Affine(*[float(v) for v in transform])
    if affine.determinant == 0:
        raise UserInputError(f"scene {scene_id}: its transform {list(transform)} is degenerate (zero pixel area)")
    return Georeference(parsed, affine, int(height), int(width))


def to_scene_coordinates(geometry: shapely.Geometry, transform: Affine) -> shapely.Geometry:
    """A geometry in pixel (column, row) coordinates mapped by the scene's affine transform."""
    a, b, c, d, e, f = transform[:6]
    return shapely.affinity.affine_transform(geometry, [a, b, d, e, c, f])


# --------------------------------------------------------------------------- components, window by window


@dataclass
class Component:
    """One connected component of one class: its polygon in scene pixel coordinates, its pixel count
    and the sum of its class probability (uint8 units; None without probabilities)."""

    class_index: int
    geometry: shapely.Geometry
    n_pixels: int
    probability_sum: int | None


def block_windows(height: int, width: int, window_size: int) -> Iterator[Window]:
    """Non-overlapping windows covering a (height, width) scene, row-major; the last ones may be smaller."""
    for row in range(0, height, window_size):
        for col in range(0, width, window_size):
            yield Window(col, row, min(window_size, width - col), min(window_size, height - row))


class _Pieces:
    """The polygons of every window, and which of them are one component (union-find)."""

    def __init__(self, with_probabilities: bool) -> None:
        self.parent: list[int] = []
        self.class_index: list[int] = []
        self.geometries: list[list[shapely.Geometry]] = []
        self.n_pixels: list[int] = []
        self.probability_sums: list[int] | None = [] if with_probabilities else None

    def find(self, piece: int) -> int:
        while self.parent[piece] != piece:
            self.parent[piece] = self.parent[self.parent[piece]]
            piece = self.parent[piece]
        return piece

    def join(self, first: np.ndarray, second: np.ndarray) -> None:
        """Merge the pieces facing each other across a seam (same class, both foreground)."""
        facing = (first != NO_PIECE) & (second != NO_PIECE)
        for a, b in set(zip(first[facing].tolist(), second[facing].tolist(), strict=True)):
            if self.class_index[a] == self.class_index[b]:
                root_a, root_b = self.find(a), self.find(b)
                if root_a != root_b:
                    self.parent[max(root_a, root_b)] = min(root_a, root_b)

    def components(self) -> list[Component]:
        groups: dict[int, list[int]] = {}
        for piece in range(len(self.parent)):
            groups.setdefault(self.find(piece), []).append(piece)
        out = []
        for root, members in groups.items():
            parts = [geom for m in members for geom in self.geometries[m]]
            geometry = parts[0] if len(parts) == 1 else shapely.union_all(parts)
            probability = None if self.probability_sums is None else sum(self.probability_sums[m] for m in members)
            out.append(Component(self.class_index[root], geometry, sum(self.n_pixels[m] for m in members), probability))
        return out


def _label_classes(block: np.ndarray, n_classes: int) -> tuple[np.ndarray, list[int]]:
    """Local labels 1..n of the 4-connected components of each class (0 elsewhere) and their classes."""
    labels = np.zeros(block.shape, np.int32)
    classes: list[int] = []
    for k in range(1, n_classes + 1):
        mask = block == k
        if not mask.any():
            continue
        count, local = cv2.connectedComponents(mask.astype(np.uint8), connectivity=CONNECTIVITY, ltype=cv2.CV_32S)
        labels[mask] = local[mask] + len(classes)
        classes.extend([k] * (count - 1))
    return labels, classes


def _add_window(
    pieces: _Pieces, window: Window, block: np.ndarray, probabilities: np.ndarray | None, n_classes: int
) -> np.ndarray:
    """Polygonise one window into `pieces`; returns its global piece ids (NO_PIECE on background)."""
    labels, classes = _label_classes(block, n_classes)
    base, n_local = len(pieces.parent), len(classes)
    pieces.parent.extend(range(base, base + n_local))
    pieces.class_index.extend(classes)
    pieces.geometries.extend([] for _ in range(n_local))
    pieces.n_pixels.extend(np.bincount(labels.ravel(), minlength=n_local + 1)[1:].tolist())
    if pieces.probability_sums is not None:
        sums = np.zeros(n_local + 1, np.int64)
        for k in range(1, n_classes + 1):
            mask = block == k
            sums += np.bincount(labels[mask], weights=probabilities[k - 1][mask], minlength=n_local + 1).astype(
                np.int64)  # uint8 weights: float64 sums are exact integers
        pieces.probability_sums.extend(sums[1:].tolist())
    # = rasterio.windows.transform(window, Affine.identity()), without its deprecated `*` on Affine
    pixel_transform = Affine.translation(window.col_off, window.row_off)
    for geojson, value in rasterio.features.shapes(
        labels, mask=labels > 0, connectivity=CONNECTIVITY, transform=pixel_transform
    ):
        pieces.geometries[base + int(value) - 1].append(shape(geojson))
    return np.where(labels > 0, labels.astype(np.int64) + (base - 1), NO_PIECE)


def _check_block(block: np.ndarray, window: Window, what: str, scene_id: str, bands: int | None = None) -> None:
    expected = (window.height, window.width) if bands is None else (bands, window.height, window.width)
    if block.shape != expected:
        raise UserInputError(
            f"`{what}` of scene {scene_id}: a window read gave shape {block.shape}, expected {expected}: "
            "rerun the pipeline that writes it"
        )


def scene_components(
    scene_id: str,
    read_classes: BlockReader,
    read_probabilities: BlockReader | None,
    height: int,
    width: int,
    n_classes: int,
    window_size: int,
) -> list[Component]:
    """The connected components of every class of a scene, read and polygonised window by window.

    read_classes(window) gives the class-index block (h, w) (0 = background, k = k-th class, other
    values are not polygonised); read_probabilities(window) gives (n_classes, h, w) uint8, or is None.
    """
    pieces = _Pieces(read_probabilities is not None)
    above = np.full(width, NO_PIECE, np.int64)  # piece ids of the scene row just above the current window row
    left = np.empty(0, np.int64)
    for window in block_windows(height, width, window_size):
        block = np.asarray(read_classes(window))
        _check_block(block, window, "predictions", scene_id)
        probabilities = None
        if read_probabilities is not None:
            probabilities = np.asarray(read_probabilities(window))
            _check_block(probabilities, window, "prediction_probabilities", scene_id, n_classes)
        ids = _add_window(pieces, window, block, probabilities, n_classes)
        cols = slice(window.col_off, window.col_off + window.width)
        pieces.join(above[cols], ids[0])
        if window.col_off > 0:
            pieces.join(left, ids[:, 0])
        above[cols], left = ids[-1], ids[:, -1]
    return pieces.components()


# --------------------------------------------------------------------------- measured table


def _metric_series(native: gpd.GeoSeries, georef: Georeference) -> tuple[gpd.GeoSeries, float, str]:
    """The geometries in a CRS measured in metres (the scene's own if projected, else its UTM zone),
    the metres per unit of that CRS, and its name."""
    if georef.crs.is_projected:
        return native, float(georef.crs.axis_info[0].unit_conversion_factor), georef.crs.to_string()
    utm = gpd.GeoSeries([georef.footprint()], crs=georef.crs).estimate_utm_crs()
    return native.to_crs(utm), 1.0, utm.to_string()


def _empty_layer(layer: str) -> gpd.GeoDataFrame:
    columns = {name: pd.Series(dtype="object" if kind == "str" else kind) for name, kind in LAYER_COLUMNS[layer].items()}
    crs = WGS84 if layer == GEOREFERENCED_LAYER else None
    return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


def scene_inventory(
    scene_id: str,
    components: Sequence[Component],
    georef: Georeference,
    class_names: Sequence[str],
    min_area: dict[str, float],
) -> tuple[str, gpd.GeoDataFrame]:
    """The scene's layer name and its rows (columns: see the module docstring), components smaller
    than `min_area[m2]` (georeferenced) or `min_area[px]` (pixel layer) left out."""
    layer = georef.layer
    if not components:
        return layer, _empty_layer(layer)
    ordered = sorted(components, key=lambda c: (c.class_index, c.geometry.bounds[1], c.geometry.bounds[0],
                                                c.geometry.bounds[3], c.geometry.bounds[2], c.n_pixels))
    n_pixels = np.array([c.n_pixels for c in ordered], np.int64)
    mean_probability = np.array(
        [np.nan if c.probability_sum is None else c.probability_sum / c.n_pixels / PROBABILITY_MAX for c in ordered]
    )
    pixel_geometries = gpd.GeoSeries([c.geometry for c in ordered])
    table = {"scene_id": scene_id, "class_name": [class_names[c.class_index - 1] for c in ordered],
             "n_pixels": n_pixels}
    if layer == PIXEL_LAYER:
        frame = gpd.GeoDataFrame(
            {**table, "area_px": pixel_geometries.area.to_numpy(), "perimeter_px": pixel_geometries.length.to_numpy(),
             "mean_probability": mean_probability},
            geometry=pixel_geometries, crs=None,
        )
    else:
        native = gpd.GeoSeries([to_scene_coordinates(g, georef.transform) for g in pixel_geometries], crs=georef.crs)
        metric, metres_per_unit, area_crs = _metric_series(native, georef)
        centroids = metric.centroid.to_crs(WGS84)
        frame = gpd.GeoDataFrame(
            {**table, "area_m2": metric.area.to_numpy() * metres_per_unit**2,
             "perimeter_m": metric.length.to_numpy() * metres_per_unit,
             "centroid_lon": centroids.x.to_numpy(), "centroid_lat": centroids.y.to_numpy(),
             "mean_probability": mean_probability, "area_crs": area_crs},
            geometry=native.to_crs(WGS84).to_numpy(), crs=WGS84,
        )
    frame = frame[frame[AREA_COLUMNS[layer]] >= float(min_area[MIN_AREA_KEYS[layer]])].reset_index(drop=True)
    frame.insert(0, "polygon_id", [f"{scene_id}:{n}" for n in range(1, len(frame) + 1)])
    return layer, frame[[*LAYER_COLUMNS[layer], "geometry"]]


def inventory_layers(scene_frames: Sequence[tuple[str, gpd.GeoDataFrame]]) -> dict[str, gpd.GeoDataFrame]:
    """Every layer of the GeoPackage (both, even when empty: readers find the same layers in every
    run), each the scenes' rows in the given order."""
    layers = {}
    for layer in INVENTORY_LAYERS:
        frames = [frame for name, frame in scene_frames if name == layer and len(frame)]
        if not frames:
            layers[layer] = _empty_layer(layer)
            continue
        with warnings.catch_warnings():  # concat of frames without CRS warns about the missing CRS
            warnings.simplefilter("ignore", UserWarning)
            merged = pd.concat(frames, ignore_index=True)
        layers[layer] = gpd.GeoDataFrame(merged, geometry="geometry", crs=frames[0].crs)
    return layers
