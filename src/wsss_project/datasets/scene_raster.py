"""Per-scene rasters of the model output (`predictions`, `supervised_predictions`,
`prediction_probabilities`): a GeoTIFF when the scene is georeferenced, else a PNG; written and read
window by window, so memory depends on a window, not on the scene.

What is saved is a :class:`SceneRaster`: its size, band count, georeferencing, band names, the
blocks ``(window, (bands, h, w) uint8)`` that cover the scene (each pixel exactly once, in any
order) and, per window, which pixels hold data. Three kinds:

- :class:`StreamedSceneRaster`: blocks computed while they are written (predict_scenes runs the
  model tile batch by tile batch inside the save);
- :class:`ArraySceneRaster`: a whole scene in memory (the `segmentation_training.refine: ios` path,
  small scenes, tests);
- :class:`FileSceneRaster`: what `load` returns, a reader that opens the file per call:
  ``shape``, ``read(window)``, ``valid(window)``, ``blocks()`` (the file's own block grid).

File format, by scene (:meth:`Georeference.is_georeferenced`: a CRS or a non-identity transform):

- georeferenced, or more than one band: ``<scene_id>.tif``, a cloud-optimised GeoTIFF (GDAL's COG
  driver: tiled ``block_size`` blocks, DEFLATE, internal overviews, overviews resampled by
  ``overview_resampling``) with the scene's CRS and affine transform and the band names as band
  descriptions. The blocks go to a plain tiled GeoTIFF first, window by window, which GDAL then
  copies to COG layout (streaming, through its block cache); both files are temporary and the COG
  is renamed into place (utils/atomic.py), so a failed write leaves the old file or none.
- otherwise (one band, no georeferencing): ``<scene_id>.png``, assembled in memory: such scenes
  are the small PNG/JPEG inputs.

Nodata: a class index (0..n, or 0/255 for a binary task) and a 0..255 probability use every byte
value, so no nodata *value* can be reserved without clashing. Pixels without data are therefore
marked by a GDAL internal per-dataset mask band (``write_mask``; QGIS and rasterio's
``read_masks``/``dataset_mask`` honour it) and hold 0. The mask is only created when some pixel is
invalid. A PNG holds no mask: its nodata pixels are 0 (background), as documented in the README.

Not kedro-datasets' ``rioxarray.GeoTIFFDataset``: it loads and saves whole xarray arrays, with no
windowed write, COG copy or mask band, so a large scene would sit in memory whole.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError
from kedro_datasets.partitions import PartitionedDataset

from wsss_project.datasets.png_array import read_png, write_png_atomic
from wsss_project.imagery.tiling import TileWindow
from wsss_project.utils.atomic import atomic_path, temporary_path_for

GEOTIFF_SUFFIX = ".tif"
PNG_SUFFIX = ".png"
SCENE_RASTER_SUFFIXES = (GEOTIFF_SUFFIX, PNG_SUFFIX)
DEFAULT_BLOCK_SIZE = 512  # GDAL's COG default block side
GDAL_BLOCK_MULTIPLE = 16  # GeoTIFF tiles must be multiples of 16 pixels a side
# The intermediate tiled GeoTIFF lives only until GDAL copies it to COG layout: fastest DEFLATE
# level, the COG itself gets GDAL's default level.
STAGING_DEFLATE_LEVEL = 1
MASK_VALID, MASK_INVALID = 255, 0  # GDAL mask band values
IDENTITY_TRANSFORM = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
# GDAL COG driver's RESAMPLING choices (checked without importing rasterio: PNG-only runs never load it)
OVERVIEW_RESAMPLINGS = ("nearest", "average", "bilinear", "cubic", "cubicspline", "lanczos", "mode", "rms")

Window = TileWindow  # (row, col, height, width) of a block in its scene


@dataclass(frozen=True)
class Georeference:
    """A scene's CRS (any string rasterio accepts, e.g. "EPSG:32645") and affine transform (the six
    coefficients a, b, c, d, e, f of rasterio's Affine); None where the scene has none."""

    crs: str | None = None
    transform: tuple[float, ...] | None = None

    @property
    def is_georeferenced(self) -> bool:
        """A CRS or a non-identity transform: the scene's rasters are GeoTIFFs."""
        has_transform = self.transform is not None and tuple(self.transform) != IDENTITY_TRANSFORM
        return self.crs is not None or has_transform

    @classmethod
    def from_scene(cls, crs: Any, transform_json: Any) -> Georeference:
        """From the `scenes` table's columns: `crs` (string or null) and `transform` (JSON list or null)."""
        transform = json.loads(transform_json) if isinstance(transform_json, str) else transform_json
        crs = None if crs is None or (isinstance(crs, float) and math.isnan(crs)) else str(crs)
        return cls(crs, None if transform is None else tuple(float(v) for v in transform))


NOT_GEOREFERENCED = Georeference()


def _full(window: Window) -> tuple[slice, slice]:
    return slice(window.row, window.row + window.height), slice(window.col, window.col + window.width)


def _bands(block: np.ndarray, count: int, window: Window, path: Any) -> np.ndarray:
    """A block as (count, h, w) uint8, checked against its window (2-D allowed for one band)."""
    block = np.asarray(block)
    if block.ndim == 2 and count == 1:
        block = block[None]
    if block.dtype != np.uint8 or block.shape != (count, window.height, window.width):
        raise DatasetError(
            f"{path}: block of window {window} is {block.dtype} {block.shape}, expected uint8 "
            f"{(count, window.height, window.width)}"
        )
    return block


class SceneRaster(ABC):
    """A (height, width) raster of `count` uint8 bands with its scene's georeferencing."""

    height: int
    width: int
    count: int
    georeference: Georeference
    band_names: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @abstractmethod
    def blocks(self) -> Iterator[tuple[Window, np.ndarray]]:
        """(window, (count, h, w) uint8) covering the raster, each pixel once."""

    def valid(self, window: Window) -> np.ndarray | None:
        """bool (h, w): True where the window holds data; None when all of it does."""
        return None

    def read(self, window: Window | None = None) -> np.ndarray:
        """The window's values (the whole raster by default): (h, w) for one band, else (count, h, w)."""
        raise TypeError(f"{type(self).__name__} is streamed: iterate blocks(), or use scene_array()")


@dataclass
class StreamedSceneRaster(SceneRaster):
    """Blocks produced on demand by `make_blocks()` (one pass per call); validity by `validity`."""

    height: int
    width: int
    count: int
    make_blocks: Callable[[], Iterator[tuple[Window, np.ndarray]]]
    georeference: Georeference = NOT_GEOREFERENCED
    validity: Callable[[Window], np.ndarray | None] | None = None
    band_names: tuple[str, ...] = ()

    def blocks(self) -> Iterator[tuple[Window, np.ndarray]]:
        return self.make_blocks()

    def valid(self, window: Window) -> np.ndarray | None:
        return None if self.validity is None else self.validity(window)


@dataclass
class ArraySceneRaster(SceneRaster):
    """A whole raster in memory: `array` (H, W) or (count, H, W) uint8, `valid_mask` bool (H, W) or None."""

    array: np.ndarray
    georeference: Georeference = NOT_GEOREFERENCED
    valid_mask: np.ndarray | None = None
    band_names: tuple[str, ...] = ()
    height: int = field(init=False)
    width: int = field(init=False)
    count: int = field(init=False)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        bands = self.array[None] if self.array.ndim == 2 else self.array
        if bands.ndim != 3 or bands.dtype != np.uint8:
            raise ValueError(f"a scene raster is uint8 (H, W) or (count, H, W), got {self.array.dtype} {self.array.shape}")
        self.count, self.height, self.width = bands.shape

    def blocks(self) -> Iterator[tuple[Window, np.ndarray]]:
        whole = Window(0, 0, self.height, self.width)
        yield whole, self.array[None] if self.array.ndim == 2 else self.array

    def valid(self, window: Window) -> np.ndarray | None:
        return None if self.valid_mask is None else self.valid_mask[_full(window)]

    def read(self, window: Window | None = None) -> np.ndarray:
        return self.array if window is None else self.array[(..., *_full(window))]


class FileSceneRaster(SceneRaster):
    """A saved scene raster (GeoTIFF or PNG), read window by window; opens the file per call.

    A PNG is decoded once, on first use, and kept by this reader (PNGs are the small scenes).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._png: np.ndarray | None = None
        if self._is_png:
            array = self._png_bands()
            self.count, self.height, self.width = array.shape
            self.georeference, self.band_names, self._block = NOT_GEOREFERENCED, (), (self.height, self.width)
            self._has_mask = False
            return
        from rasterio.enums import MaskFlags  # only GeoTIFF outputs pay for the import

        with _open(self.path) as src:
            self.height, self.width, self.count = src.height, src.width, src.count
            transform = tuple(src.transform)[:6]
            self.georeference = Georeference(
                src.crs.to_string() if src.crs else None, None if transform == IDENTITY_TRANSFORM else transform
            )
            self.band_names = tuple(name or "" for name in src.descriptions) if any(src.descriptions) else ()
            self._block = src.block_shapes[0]
            self._has_mask = MaskFlags.per_dataset in src.mask_flag_enums[0]

    @property
    def _is_png(self) -> bool:
        return self.path.suffix.lower() == PNG_SUFFIX

    def _png_bands(self) -> np.ndarray:
        if self._png is None:
            array = read_png(self.path)
            self._png = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
        return self._png

    def _bands_of(self, window: Window | None) -> np.ndarray:
        if self._is_png:
            bands = self._png_bands()
            return bands if window is None else bands[(..., *_full(window))]
        with _open(self.path) as src:
            return src.read(window=None if window is None else _rasterio_window(window))

    def read(self, window: Window | None = None) -> np.ndarray:
        bands = self._bands_of(window)
        return bands[0] if self.count == 1 else bands

    def valid(self, window: Window | None = None) -> np.ndarray | None:
        if not self._has_mask:
            return None
        with _open(self.path) as src:
            return src.read_masks(1, window=None if window is None else _rasterio_window(window)) != MASK_INVALID

    def windows(self) -> list[Window]:
        """The file's block grid (the whole raster for a PNG), row-major."""
        block_h, block_w = self._block
        return [
            Window(row, col, min(block_h, self.height - row), min(block_w, self.width - col))
            for row in range(0, self.height, block_h)
            for col in range(0, self.width, block_w)
        ]

    def blocks(self) -> Iterator[tuple[Window, np.ndarray]]:
        for window in self.windows():
            yield window, self._bands_of(window)


def _open(path: Path):
    import rasterio

    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioError as err:
        raise DatasetError(f"{path}: cannot read the scene raster: {err}") from err


def _rasterio_window(window: Window):
    from rasterio.windows import Window as RasterioWindow

    return RasterioWindow(window.col, window.row, window.width, window.height)


def scene_array(raster: SceneRaster | np.ndarray) -> np.ndarray:
    """The whole raster in memory, (H, W) for one band, else (count, H, W); pixels without data are 0."""
    if isinstance(raster, np.ndarray):
        return raster
    out = np.zeros((raster.count, raster.height, raster.width), np.uint8)
    for window, block in raster.blocks():
        out[(..., *_full(window))] = _masked(_bands(block, raster.count, window, raster), raster.valid(window))
    return out[0] if raster.count == 1 else out


def as_scene_raster(item: SceneRaster | np.ndarray) -> SceneRaster:
    """A scene raster as is; a bare array as a non-georeferenced ArraySceneRaster."""
    return item if isinstance(item, SceneRaster) else ArraySceneRaster(np.asarray(item))


def _masked(block: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """The block with 0 wherever the pixel holds no data."""
    return block if valid is None or valid.all() else np.where(valid[None], block, 0).astype(np.uint8)


class _Coverage:
    """Checks that the blocks lie inside the raster and add up to its area (each pixel once)."""

    def __init__(self, raster: SceneRaster, path: Path) -> None:
        self.raster, self.path, self.pixels = raster, path, 0

    def add(self, window: Window) -> None:
        r = self.raster
        if window.row < 0 or window.col < 0 or window.row + window.height > r.height or window.col + window.width > r.width:
            raise DatasetError(f"{self.path}: block window {window} lies outside the {r.height}x{r.width} raster")
        self.pixels += window.height * window.width

    def check(self) -> None:
        if self.pixels != self.raster.height * self.raster.width:
            raise DatasetError(
                f"{self.path}: the blocks cover {self.pixels} pixels of a {self.raster.height}x{self.raster.width} "
                "raster: each pixel must be written exactly once"
            )


def target_path(stem: Path, raster: SceneRaster) -> Path:
    """`<stem>.tif` for a georeferenced or multi-band raster, else `<stem>.png`."""
    suffix = GEOTIFF_SUFFIX if raster.georeference.is_georeferenced or raster.count != 1 else PNG_SUFFIX
    return stem.with_name(stem.name + suffix)


def write_scene_raster(
    stem: str | Path, raster: SceneRaster | np.ndarray, block_size: int = DEFAULT_BLOCK_SIZE,
    overview_resampling: str = "nearest",
) -> Path:
    """Write `raster` to `<stem>.tif` or `<stem>.png` (see the module doc), atomically; returns the path.

    A sibling file of the other format (an earlier run's) is removed, so one scene has one file.
    """
    raster = as_scene_raster(raster)
    stem = Path(stem)
    path = target_path(stem, raster)
    if path.suffix == PNG_SUFFIX:
        write_png_atomic(path, scene_array(raster))
    else:
        _write_cog(path, raster, block_size, overview_resampling)
    for suffix in SCENE_RASTER_SUFFIXES:
        other = stem.with_name(stem.name + suffix)
        if other != path:
            other.unlink(missing_ok=True)
    return path


def _write_cog(path: Path, raster: SceneRaster, block_size: int, overview_resampling: str) -> None:
    import rasterio
    import rasterio.shutil
    from affine import Affine

    transform = raster.georeference.transform
    profile = {
        "driver": "GTiff", "height": raster.height, "width": raster.width, "count": raster.count,
        "dtype": "uint8", "crs": raster.georeference.crs,
        "transform": Affine(*transform) if transform is not None else Affine.identity(),
        "tiled": True, "blockxsize": block_size, "blockysize": block_size,
        "compress": "deflate", "zlevel": STAGING_DEFLATE_LEVEL,
    }
    with atomic_path(path) as final:
        staging = temporary_path_for(path)
        try:
            with rasterio.open(staging, "w", **profile) as dst:
                _write_blocks(dst, raster, path)
                for band, name in enumerate(raster.band_names, start=1):
                    dst.set_band_description(band, name)
            rasterio.shutil.copy(
                staging, final, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=block_size,
                RESAMPLING=overview_resampling.upper(), OVERVIEWS="AUTO",
            )
        except rasterio.errors.RasterioError as err:
            raise DatasetError(f"{path}: cannot write the scene raster: {err}") from err
        finally:
            staging.unlink(missing_ok=True)


def _write_blocks(dst: Any, raster: SceneRaster, path: Path) -> None:
    """Every block into the open GeoTIFF; the mask band is created at the first pixel without data
    (GDAL reads an unwritten mask block as "no data", so the windows before it are then marked valid)."""
    coverage = _Coverage(raster, path)
    before_mask: list[Window] = []  # windows written while there was no mask yet
    has_mask = False
    for window, block in raster.blocks():
        coverage.add(window)
        block = _bands(block, raster.count, window, path)
        valid = raster.valid(window)
        where = _rasterio_window(window)
        dst.write(_masked(block, valid), window=where)
        if not has_mask and valid is not None and not valid.all():
            for earlier in before_mask:
                dst.write_mask(np.full((earlier.height, earlier.width), MASK_VALID, np.uint8),
                               window=_rasterio_window(earlier))
            has_mask = True
        if has_mask:
            mask = MASK_VALID if valid is None else np.where(valid, MASK_VALID, MASK_INVALID).astype(np.uint8)
            dst.write_mask(np.broadcast_to(np.uint8(mask), (window.height, window.width)).copy(), window=where)
        else:
            before_mask.append(window)
    coverage.check()


def existing_path(stem: str | Path) -> Path | None:
    """The saved file of `stem` (`.tif` or `.png`), None when there is none; two is an error."""
    stem = Path(stem)
    found = [p for p in (stem.with_name(stem.name + s) for s in SCENE_RASTER_SUFFIXES) if p.is_file()]
    if len(found) > 1:
        raise DatasetError(f"{stem}: both {found[0].name} and {found[1].name} exist; delete the stale one")
    return found[0] if found else None


class SceneRasterDataset(AbstractDataset[SceneRaster, FileSceneRaster]):
    """One scene raster at `<filepath>.tif` or `<filepath>.png` (filepath without suffix; see module doc).

    save: a SceneRaster (or a bare uint8 array: not georeferenced); load: a FileSceneRaster reader.
    block_size: GeoTIFF block side (a multiple of 16); overview_resampling: a GDAL resampling name
    for the overviews (`nearest` for class indices, `average` for probabilities).
    """

    def __init__(
        self, filepath: str, block_size: int = DEFAULT_BLOCK_SIZE, overview_resampling: str = "nearest",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if block_size <= 0 or block_size % GDAL_BLOCK_MULTIPLE:
            raise DatasetError(f"{filepath}: block_size must be a positive multiple of {GDAL_BLOCK_MULTIPLE}, got {block_size}")
        if overview_resampling not in OVERVIEW_RESAMPLINGS:
            raise DatasetError(f"{filepath}: overview_resampling {overview_resampling!r} is not one of {list(OVERVIEW_RESAMPLINGS)}")
        self._filepath = PurePosixPath(filepath)
        self._block_size = int(block_size)
        self._overview_resampling = overview_resampling
        self.metadata = metadata

    def load(self) -> FileSceneRaster:
        path = existing_path(self._filepath)
        if path is None:
            raise DatasetError(f"{self._filepath}: no {' or '.join(SCENE_RASTER_SUFFIXES)} file")
        return FileSceneRaster(path)

    def save(self, data: SceneRaster | np.ndarray) -> None:
        write_scene_raster(Path(self._filepath), data, self._block_size, self._overview_resampling)

    def _exists(self) -> bool:
        return existing_path(self._filepath) is not None

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "block_size": self._block_size,
                "overview_resampling": self._overview_resampling}


class SceneRasterPartitions(PartitionedDataset):
    """PartitionedDataset of SceneRasterDatasets keyed by scene_id, whose files end in `.tif` or `.png`
    (a scene's format follows its georeferencing, so one folder holds both)."""

    def __init__(self, *, path: str, dataset: Any = "wsss_project.datasets.SceneRasterDataset", **kwargs: Any) -> None:
        if kwargs.get("filename_suffix"):
            raise DatasetError(f"{path}: SceneRasterPartitions chooses .tif or .png per scene; remove filename_suffix")
        super().__init__(path=path, dataset=dataset, **kwargs)

    def _list_partitions(self) -> list[str]:
        if self._cached_partitions is not None:
            return self._cached_partitions
        stems: list[str] = []
        for found in self._filesystem.find(self._normalized_path, **self._load_args):
            name = found.rsplit(self._sep, 1)[-1]
            suffix = next((s for s in SCENE_RASTER_SUFFIXES if name.endswith(s)), None)
            if suffix and not name.startswith("."):
                stems.append(found[: -len(suffix)])
        duplicated = sorted({s for s in stems if stems.count(s) > 1})
        if duplicated:
            raise DatasetError(f"{self._path}: scenes with both a .tif and a .png: {duplicated}")
        self._cached_partitions = stems
        return stems

