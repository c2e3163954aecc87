"""Reading a user's folder of imagery: PNG, JPEG and GeoTIFF scenes with their masks."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from wsss_project.contracts import IGNORE_INDEX
from wsss_project.errors import UserInputError
from wsss_project.imagery.tiling import TileWindow

GEOTIFF_SUFFIXES = (".tif", ".tiff")
MAX_LISTED_VALUES = 5
# `data.folder.rgb_bands` default: the first three bands, counted from 1 as rasterio does
DEFAULT_RGB_BANDS = (1, 2, 3)


@dataclass(frozen=True)
class SceneFile:
    """One scene: its id (the file stem), image path and mask path."""

    scene_id: str
    image_path: Path
    mask_path: Path | None


def _files_by_stem(directory: Path, extensions: Sequence[str], parameter: str) -> dict[str, Path]:
    """Files of `directory` with one of `extensions` (any case), keyed by stem; stems unique."""
    if not directory.is_dir():
        raise UserInputError(f"parameter `{parameter}`: directory {directory} does not exist")
    wanted = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        # hidden files (macOS "._x.png" resource forks, editor backups) are never imagery
        if path.name.startswith("."):
            continue
        if path.is_file() and path.suffix.lower() in wanted:
            if path.stem in found:
                raise UserInputError(
                    f"parameter `{parameter}`: {found[path.stem].name} and {path.name} share the stem {path.stem!r}"
                )
            found[path.stem] = path
    return found


def find_scene_files(
    images_dir: str | Path, masks_dir: str | Path | None, extensions: Sequence[str]
) -> list[SceneFile]:
    """Pair every image with the mask of the same file stem, sorted by scene id."""
    images = _files_by_stem(Path(images_dir), extensions, "data.folder.images_dir")
    if not images:
        raise UserInputError(
            f"parameter `data.folder.images_dir`: no images with extensions {list(extensions)} in {images_dir}"
        )
    if masks_dir is None:
        return [SceneFile(stem, path, None) for stem, path in images.items()]
    masks = _files_by_stem(Path(masks_dir), extensions, "data.folder.masks_dir")
    missing = sorted(set(images) - set(masks))
    if missing:
        raise UserInputError(
            f"parameter `data.folder.masks_dir`: no mask in {masks_dir} for image(s) "
            f"{', '.join(images[s].name for s in missing[:MAX_LISTED_VALUES])}"
            + (
                f" and {len(missing) - MAX_LISTED_VALUES} more"
                if len(missing) > MAX_LISTED_VALUES
                else ""
            )
        )
    return [SceneFile(stem, images[stem], masks[stem]) for stem in images]


def validate_rgb_bands(rgb_bands: Sequence[int] | None) -> tuple[int, int, int]:
    """`data.folder.rgb_bands` as three 1-based band indices; None means DEFAULT_RGB_BANDS."""
    if rgb_bands is None:
        return DEFAULT_RGB_BANDS
    is_list = isinstance(rgb_bands, Sequence) and not isinstance(rgb_bands, str)
    bands = list(rgb_bands) if is_list else []
    is_index = [isinstance(b, (int, np.integer)) and not isinstance(b, bool) for b in bands]
    if len(bands) != 3 or not all(is_index) or min(bands) < 1:
        raise UserInputError(
            "parameter `data.folder.rgb_bands` must be three 1-based band indices (R, G, B), "
            f"got {rgb_bands!r}"
        )
    return (int(bands[0]), int(bands[1]), int(bands[2]))


def _select_bands(rgb_bands: Sequence[int], count: int, path: Path) -> list[int]:
    """The 1-based bands to read as R, G, B from a file with `count` bands.

    A one-band file under the default bands is grey and is repeated to RGB; any other request
    for a band the file lacks is an error naming the parameter and the file.
    """
    bands = validate_rgb_bands(rgb_bands)
    if count == 1 and bands == DEFAULT_RGB_BANDS:
        return [1, 1, 1]
    if max(bands) > count:
        raise UserInputError(
            f"{path}: parameter `data.folder.rgb_bands` {list(bands)} asks for band {max(bands)} "
            f"but the file has {count} band(s)"
        )
    return list(bands)


BandBounds = tuple[float, float] | None  # one band's (low, high) stretch values; None: no valid value


def stretch_bounds(
    array: np.ndarray, keep: np.ndarray, low_percentile: float, high_percentile: float
) -> tuple[BandBounds, ...]:
    """Per band, the `low_percentile` and `high_percentile` values of its kept (valid) values.

    Taken once per scene (over the whole scene, or a decimated read of a large one) and applied
    to every window of it by apply_stretch, so a window's pixels get the scene's stretch.
    """
    bounds: list[BandBounds] = []
    for band in range(array.shape[-1]):
        band_keep = keep[..., band]
        if not band_keep.any():
            bounds.append(None)  # a band with no valid value stays 0, as its invalid values do
            continue
        low, high = np.percentile(array[..., band][band_keep].astype(np.float64), [low_percentile, high_percentile])
        bounds.append((float(low), float(high)))
    return tuple(bounds)


def apply_stretch(array: np.ndarray, keep: np.ndarray, bounds: Sequence[BandBounds] | None) -> np.ndarray:
    """(H, W, C) uint8: each band mapped linearly from its (low, high) onto 0..255, clipped and
    rounded; values not kept are 0. `bounds` None keeps uint8 values as read."""
    if bounds is None:
        return np.where(keep, array, 0).astype(np.uint8)
    out = np.zeros(array.shape, np.uint8)
    for band, band_bounds in enumerate(bounds):
        band_keep = keep[..., band]
        if band_bounds is None or not band_keep.any():
            continue
        low, high = band_bounds
        scale = 255.0 / (high - low) if high > low else 0.0
        band_values = array[..., band][band_keep].astype(np.float64)
        out[..., band][band_keep] = np.clip((band_values - low) * scale, 0, 255).round().astype(np.uint8)
    return out


def stretch_to_uint8(
    array: np.ndarray,
    low_percentile: float = 2.0,
    high_percentile: float = 98.0,
    valid: np.ndarray | None = None,
    stretch_uint8: bool = False,
) -> np.ndarray:
    """Map an (H, W, C) image to 0..255 by a per-band percentile stretch, as GIS viewers show
    an RGB composite (QGIS's cumulative count cut).

    Per band, because sensors differ per band (a green-cast scene keeps its landslides bright
    in red once each band spans 0..255). uint8 input is kept as read unless `stretch_uint8`.
    `valid` (bool, broadcastable to `array`) marks the values that count: the percentiles are
    taken over them only, so a nodata value (0, -9999) does not pull the stretch, and every
    invalid value is written as 0.
    """
    keep = np.ones(array.shape, bool) if valid is None else np.broadcast_to(valid, array.shape)
    if array.dtype == np.uint8 and not stretch_uint8:
        return apply_stretch(array, keep, None)
    if not keep.any():
        raise ValueError("stretch_to_uint8: no valid value to take percentiles over")
    return apply_stretch(array, keep, stretch_bounds(array, keep, low_percentile, high_percentile))


@dataclass(frozen=True)
class ImageInfo:
    """What an image file says about itself: its size, the bands read as R, G, B, their dtype
    and its georeferencing (None without; `transform` = 6 affine coefficients a, b, c, d, e, f)."""

    height: int
    width: int
    bands: tuple[int, ...]
    dtype: str
    crs: str | None
    transform: list[float] | None

    @property
    def rotated(self) -> bool:
        """True for a rotated or sheared transform (b or d non-zero): tiles are cut in pixel space."""
        return self.transform is not None and (self.transform[1] != 0 or self.transform[3] != 0)


# GDAL keeps every block a read touches in its block cache (default 5 % of RAM) until the file is
# closed: a decimated read of a large scene would hold all of it (measured: +120 MB for a 4096-px
# RGB GeoTIFF read to 1024 px, +20 MB with 16 MB). A window read needs only the blocks under it.
GDAL_BLOCK_CACHE_MB = 16
# A scene's image and its mask: the PNG / JPEG decodes a DecodedImages keeps while a scene's windows are read.
DECODED_IMAGES_KEPT = 2


class DecodedImages:
    """The last few whole decodes of PNG / JPEG files, by (path, what was decoded).

    PNG and JPEG cannot be read by window: a window of one is cut from a whole decode. Tiles are
    read scene by scene, so keeping the last scene's image and mask decodes them once per scene;
    memory is then one decoded scene (large scenes should be GeoTIFF, which is read by window).
    One instance per reading pass (not thread-safe); without one, every window decodes its file.
    """

    def __init__(self, capacity: int = DECODED_IMAGES_KEPT) -> None:
        self._capacity = capacity
        self._arrays: dict[tuple, np.ndarray] = {}

    def get(self, key: tuple, decode: Callable[[], np.ndarray]) -> np.ndarray:
        """The decode kept under `key`, else decode() (dropping the oldest kept beyond capacity)."""
        if key not in self._arrays:
            while len(self._arrays) >= self._capacity:
                self._arrays.pop(next(iter(self._arrays)))
            self._arrays[key] = decode()
        return self._arrays[key]


def is_geotiff(path: str | Path) -> bool:
    """GeoTIFFs are read through rasterio (by window); every other image through OpenCV (whole)."""
    return Path(path).suffix.lower() in GEOTIFF_SUFFIXES


def sample_shape(height: int, width: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) when the image has at most `max_pixels`, else the largest shape of the
    same aspect with at most `max_pixels` (a decimated read for the stretch percentiles)."""
    if height * width <= max_pixels:
        return height, width
    factor = math.sqrt(height * width / max_pixels)
    rows, cols = max(1, int(height / factor)), max(1, int(width / factor))
    while rows * cols > max_pixels:  # float rounding at the edge
        rows, cols = max(1, rows - 1), max(1, cols - 1)
    return rows, cols


@contextmanager
def _open_geotiff(path: Path) -> Iterator[Any]:
    """A rasterio dataset; an unreadable file is a UserInputError naming it. A file without
    georeferencing is read as pixels without rasterio's warning on every window (load_scenes
    says so once per run)."""
    import rasterio  # only GeoTIFF users pay for the import

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.Env(GDAL_CACHEMAX=GDAL_BLOCK_CACHE_MB), rasterio.open(path) as src:
                yield src
    except rasterio.errors.RasterioError as err:
        raise UserInputError(f"{path}: cannot read GeoTIFF: {err}") from err


def _geotiff_read(
    path: Path,
    rgb_bands: Sequence[int] | None,
    window: TileWindow | None = None,
    out_shape: tuple[int, int] | None = None,
    masks_only: bool = False,
    values_only: bool = False,
) -> tuple[np.ndarray | None, np.ndarray | None, ImageInfo]:
    """Bands (C, h, w) (None with `masks_only`), GDAL's per-band validity masks (C, h, w) (None
    with `values_only`) and the file's ImageInfo, from one rasterio read: the whole file, one
    `window`, or a nearest decimation to `out_shape` (rows, cols). `rgb_bands` None reads the
    first (up to) 3 bands."""
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    with _open_geotiff(path) as src:
        indexes = (
            list(range(1, min(src.count, 3) + 1))
            if rgb_bands is None
            else _select_bands(rgb_bands, src.count, path)
        )
        dtype = src.dtypes[indexes[0] - 1]
        where: dict[str, Any] = {}
        if window is not None:
            where["window"] = Window(window.col, window.row, window.width, window.height)
        if out_shape is not None:
            where.update(out_shape=(len(indexes), *out_shape), resampling=Resampling.nearest)
        # NaN / inf count as nodata, so float validity needs the values too
        need_values = not masks_only or np.issubdtype(np.dtype(dtype), np.floating)
        bands = src.read(indexes, **where) if need_values else None
        valid = None if values_only else src.read_masks(indexes, **where) != 0
        info = ImageInfo(
            src.height, src.width, tuple(indexes), dtype,
            src.crs.to_string() if src.crs else None,
            list(src.transform)[:6] if src.transform and not src.transform.is_identity else None,
        )
    if valid is not None and bands is not None and np.issubdtype(bands.dtype, np.floating):
        valid &= np.isfinite(bands)  # NaN/inf without a declared nodata are still no data
    return (None if masks_only else bands), valid, info


def _read_geotiff(
    path: Path, rgb_bands: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Bands as (H, W, C), their validity (H, W, C) and {crs, transform (6 affine coefficients)}.

    With `rgb_bands` the three chosen bands are read (see _select_bands); without, the first
    (up to) 3. Validity is GDAL's per-band mask: the nodata value, an internal or sidecar mask,
    or an alpha band, and for float bands also NaN / inf.
    """
    bands, valid, info = _geotiff_read(path, rgb_bands)
    meta = {"crs": info.crs, "transform": info.transform}
    return np.moveaxis(bands, 0, -1), np.moveaxis(valid, 0, -1), meta


def _decode_plain_image(path: Path) -> np.ndarray:
    """PNG / JPEG as (H, W, C) with channels R, G, B (A); grey is one channel."""
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise UserInputError(f"{path}: cannot read image (missing, corrupt or not an image)")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        code = cv2.COLOR_BGRA2RGBA if array.shape[2] == 4 else cv2.COLOR_BGR2RGB
        array = cv2.cvtColor(array, code)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise UserInputError(f"{path}: expected a grey, RGB or RGBA image, got shape {array.shape}")
    return array


def _read_plain_image(path: Path, rgb_bands: Sequence[int]) -> np.ndarray:
    """PNG / JPEG as (H, W, 3): channels counted R=1, G=2, B=3 (A=4), grey is one band."""
    array = _decode_plain_image(path)
    indexes = _select_bands(rgb_bands, array.shape[2], path)
    return array[..., [i - 1 for i in indexes]]


def _decimate(array: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour decimation of (H, W, ...) to `out_shape`: each output pixel takes the
    input pixel under its centre."""
    rows = (np.arange(out_shape[0]) * 2 + 1) * array.shape[0] // (2 * out_shape[0])
    cols = (np.arange(out_shape[1]) * 2 + 1) * array.shape[1] // (2 * out_shape[1])
    return array[rows][:, cols]


def read_image_sample(
    path: str | Path, rgb_bands: Sequence[int], max_pixels: int
) -> tuple[np.ndarray, np.ndarray, ImageInfo]:
    """The bands (H, W, C) and per-band validity (H, W, C) of an image for its stretch percentiles:
    the whole image when it has at most `max_pixels`, else a nearest decimation to at most that
    many (rasterio `out_shape` for GeoTIFF; PNG / JPEG are decoded whole, then decimated). Also
    the file's ImageInfo (PNG / JPEG: no CRS or transform)."""
    path = Path(path)
    if is_geotiff(path):
        with _open_geotiff(path) as src:
            height, width = src.height, src.width
        shape = sample_shape(height, width, max_pixels)
        bands, valid, info = _geotiff_read(path, rgb_bands, out_shape=None if shape == (height, width) else shape)
        return np.moveaxis(bands, 0, -1), np.moveaxis(valid, 0, -1), info
    decoded = _decode_plain_image(path)
    indexes = tuple(_select_bands(rgb_bands, decoded.shape[2], path))
    bands = decoded[..., [i - 1 for i in indexes]]
    del decoded
    info = ImageInfo(bands.shape[0], bands.shape[1], indexes, str(bands.dtype), None, None)
    shape = sample_shape(info.height, info.width, max_pixels)
    if shape != (info.height, info.width):
        bands = _decimate(bands, shape)
    return bands, np.ones(bands.shape, bool), info


def read_bands_window(
    path: str | Path, bands: Sequence[int], window: TileWindow, cache: DecodedImages | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One window's bands (h, w, C) and per-band validity (h, w, C); `bands` are the 1-based
    bands to read (ImageInfo.bands). GeoTIFF by rasterio window; PNG / JPEG cut from a whole
    decode (kept in `cache`)."""
    path = Path(path)
    if is_geotiff(path):
        values, valid, _ = _geotiff_read(path, bands, window)
        return np.moveaxis(values, 0, -1), np.moveaxis(valid, 0, -1)
    decoded = _cached_plain(path, bands, cache)
    part = decoded[window.row : window.row + window.height, window.col : window.col + window.width]
    return part, np.ones(part.shape, bool)


def read_valid_window(
    path: str | Path, bands: Sequence[int], window: TileWindow, cache: DecodedImages | None = None
) -> np.ndarray:
    """(h, w) bool: the window's pixels with data (any of `bands` valid, read_image_and_valid's
    rule); GeoTIFF reads only its masks (and the values of float bands); PNG / JPEG are all valid."""
    path = Path(path)
    if not is_geotiff(path):
        return np.ones((window.height, window.width), bool)
    _, valid, _ = _geotiff_read(path, bands, window, masks_only=True)
    return valid.any(axis=0)


def _cached_plain(path: Path, bands: Sequence[int], cache: DecodedImages | None) -> np.ndarray:
    def decode() -> np.ndarray:
        return _decode_plain_image(path)[..., [i - 1 for i in bands]]

    return decode() if cache is None else cache.get((str(path), "image", tuple(bands)), decode)


def read_image_and_valid(
    path: str | Path,
    low_percentile: float = 2.0,
    high_percentile: float = 98.0,
    rgb_bands: Sequence[int] = DEFAULT_RGB_BANDS,
    stretch_uint8: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """RGB uint8 (H,W,3), the valid-pixel mask (H,W) and {crs, transform} (None for PNG/JPEG).

    The whole scene at once (the data_preparation pipeline reads scenes by window: imagery.scenes).
    Non-8-bit bands are always stretched per band to 0..255 (stretch_to_uint8); 8-bit ones
    only with `stretch_uint8`. A GeoTIFF pixel is nodata when all its chosen bands are masked (GDAL's rule for a dataset
    mask) or non-finite; nodata pixels are left out of the stretch and written as 0. A band
    masked in an otherwise valid pixel is also left out and written as 0. PNG/JPEG carry no
    nodata. A file with no valid pixel is an error naming it.
    """
    path = Path(path)
    if is_geotiff(path):
        bands, band_valid, meta = _read_geotiff(path, rgb_bands)
    else:
        bands = _read_plain_image(path, rgb_bands)
        band_valid, meta = np.ones(bands.shape, bool), {"crs": None, "transform": None}
    valid = band_valid.any(axis=2)
    if not valid.any():
        raise all_nodata_error(path)
    rgb = stretch_to_uint8(bands, low_percentile, high_percentile, band_valid, stretch_uint8)
    return np.ascontiguousarray(rgb), valid, meta


def all_nodata_error(path: Path, sampled: int | None = None) -> UserInputError:
    """The error for an image without one valid pixel (`sampled`: the pixels of a decimated read)."""
    where = "every pixel" if sampled is None else f"every pixel of a {sampled}-pixel decimated read"
    return UserInputError(
        f"{path}: {where} is nodata (the file's nodata value, mask or NaN); "
        "remove the scene or fix its nodata"
    )


def read_image(
    path: str | Path,
    low_percentile: float = 2.0,
    high_percentile: float = 98.0,
    rgb_bands: Sequence[int] = DEFAULT_RGB_BANDS,
) -> tuple[np.ndarray, dict[str, Any]]:
    """RGB uint8 (H,W,3) and {crs, transform}; read_image_and_valid without the valid mask."""
    rgb, _, meta = read_image_and_valid(path, low_percentile, high_percentile, rgb_bands)
    return rgb, meta


def _decode_mask(path: Path) -> np.ndarray:
    """A PNG / JPEG mask's raw values: (H, W), or (H, W, 3) RGB for colour files."""
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise UserInputError(f"{path}: cannot read mask (missing, corrupt or not an image)")
    if array.ndim == 3:
        array = cv2.cvtColor(array[..., :3], cv2.COLOR_BGR2RGB)
    return array


def _read_mask_array(
    path: Path, window: TileWindow | None = None, cache: DecodedImages | None = None
) -> np.ndarray:
    """Raw mask values, whole or one `window`: (h, w) for single-band files, (h, w, 3) RGB for colour files."""
    if is_geotiff(path):
        # a mask's values decide its classes; its own nodata flag is not used
        array, _, _ = _geotiff_read(path, None, window, values_only=True)
        array = np.moveaxis(array, 0, -1)
        return array[..., 0] if array.shape[2] == 1 else array
    array = _decode_mask(path) if cache is None else cache.get((str(path), "mask"), lambda: _decode_mask(path))
    if window is None:
        return array
    return array[window.row : window.row + window.height, window.col : window.col + window.width]


def mask_shape(path: str | Path) -> tuple[int, int]:
    """A mask file's (height, width): a GeoTIFF's from its header, a PNG / JPEG's by decoding it."""
    path = Path(path)
    if not is_geotiff(path):
        return tuple(_decode_mask(path).shape[:2])
    with _open_geotiff(path) as src:
        return src.height, src.width


def check_mask_shape(path: Path, shape: tuple[int, int], expected_shape: tuple[int, int]) -> None:
    """A mask must have its image's size."""
    if tuple(shape) != tuple(expected_shape):
        raise UserInputError(f"{path}: mask is {tuple(shape)} but its image is {tuple(expected_shape)}")


def read_mask(
    path: str | Path,
    expected_shape: tuple[int, int],
    class_values: Sequence[int],
    palette: Sequence[Sequence[int]] | None = None,
) -> np.ndarray:
    """Class-index mask (0 = background, k = k-th class, 255 = ignore) from a mask file.

    class_values[k-1] is class k's pixel value; with `palette`, the mask is RGB and palette[k-1]
    is class k's colour (black is background).
    """
    path = Path(path)
    array = _read_mask_array(path)
    check_mask_shape(path, array.shape[:2], expected_shape)
    return mask_class_index(array, path, class_values, palette)


def read_mask_window(
    path: str | Path,
    window: TileWindow,
    class_values: Sequence[int],
    palette: Sequence[Sequence[int]] | None = None,
    cache: DecodedImages | None = None,
) -> np.ndarray:
    """read_mask for one window (the mask's size is checked when its scene is loaded)."""
    path = Path(path)
    return mask_class_index(_read_mask_array(path, window, cache), path, class_values, palette)


def mask_class_index(
    array: np.ndarray,
    path: Path,
    class_values: Sequence[int],
    palette: Sequence[Sequence[int]] | None = None,
) -> np.ndarray:
    """Raw mask values of `path` (whole or a window) as class indices; a value or colour of no
    class is an error naming the file."""
    out = np.full(array.shape[:2], IGNORE_INDEX, dtype=np.uint8)
    if palette is not None:
        rgb = array if array.ndim == 3 else np.repeat(array[..., None], 3, axis=2)
        # white is "ignore" like value 255, unless a class is white (Potsdam's impervious surface)
        known = np.all(rgb == IGNORE_INDEX, axis=2)
        for index, colour in enumerate([(0, 0, 0), *palette]):
            hit = np.all(rgb == np.asarray(colour, dtype=rgb.dtype), axis=2)
            out[hit], known = index, known | hit
        if not known.all():
            bad = np.unique(rgb[~known].reshape(-1, 3), axis=0)[:MAX_LISTED_VALUES]
            raise UserInputError(
                f"{path}: colours {bad.tolist()} match no class of `data.folder.mask_palette`"
            )
        return out
    if array.ndim == 3:
        if not (array == array[..., :1]).all():
            raise UserInputError(
                f"{path}: mask is colour; set `data.folder.mask_palette` for RGB masks"
            )
        array = array[..., 0]
    known = (array == 0) | (array == IGNORE_INDEX)
    out[array == 0] = 0
    for index, value in enumerate(class_values, start=1):
        hit = array == value
        out[hit], known = index, known | hit
    if not known.all():
        bad = np.unique(array[~known])[:MAX_LISTED_VALUES]
        raise UserInputError(
            f"{path}: values {bad.tolist()} match no class of `data.folder.mask_class_values` {list(class_values)}"
        )
    return out
