"""Reading a user's folder of imagery: PNG, JPEG and GeoTIFF scenes with their masks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from wsss_project.contracts import IGNORE_INDEX
from wsss_project.errors import UserInputError

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
        return np.where(keep, array, 0).astype(np.uint8)
    values = array.astype(np.float64)
    if not keep.any():
        raise ValueError("stretch_to_uint8: no valid value to take percentiles over")
    out = np.zeros(array.shape, np.uint8)
    for band in range(array.shape[-1]):
        band_keep = keep[..., band]
        if not band_keep.any():
            continue  # a band with no valid value stays 0, as its invalid values do
        band_values = values[..., band][band_keep]
        low, high = np.percentile(band_values, [low_percentile, high_percentile])
        scale = 255.0 / (high - low) if high > low else 0.0
        out[..., band][band_keep] = np.clip((band_values - low) * scale, 0, 255).round().astype(np.uint8)
    return out


def _read_geotiff(
    path: Path, rgb_bands: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Bands as (H, W, C), their validity (H, W, C) and {crs, transform (6 affine coefficients)}.

    With `rgb_bands` the three chosen bands are read (see _select_bands); without, the first
    (up to) 3. Validity is GDAL's per-band mask: the nodata value, an internal or sidecar mask,
    or an alpha band.
    """
    import rasterio  # only GeoTIFF users pay for the import

    try:
        with rasterio.open(path) as src:
            indexes = (
                list(range(1, min(src.count, 3) + 1))
                if rgb_bands is None
                else _select_bands(rgb_bands, src.count, path)
            )
            bands = src.read(indexes)
            valid = src.read_masks(indexes) != 0
            crs = src.crs.to_string() if src.crs else None
            transform = (
                list(src.transform)[:6] if src.transform and not src.transform.is_identity else None
            )
    except rasterio.errors.RasterioError as err:
        raise UserInputError(f"{path}: cannot read GeoTIFF: {err}") from err
    meta = {"crs": crs, "transform": transform}
    return np.moveaxis(bands, 0, -1), np.moveaxis(valid, 0, -1), meta


def _read_plain_image(path: Path, rgb_bands: Sequence[int]) -> np.ndarray:
    """PNG / JPEG as (H, W, 3): channels counted R=1, G=2, B=3 (A=4), grey is one band."""
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
    indexes = _select_bands(rgb_bands, array.shape[2], path)
    return array[..., [i - 1 for i in indexes]]


def read_image_and_valid(
    path: str | Path,
    low_percentile: float = 2.0,
    high_percentile: float = 98.0,
    rgb_bands: Sequence[int] = DEFAULT_RGB_BANDS,
    stretch_uint8: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """RGB uint8 (H,W,3), the valid-pixel mask (H,W) and {crs, transform} (None for PNG/JPEG).

    Non-8-bit bands are always stretched per band to 0..255 (stretch_to_uint8); 8-bit ones
    only with `stretch_uint8`. A GeoTIFF pixel is nodata when all its chosen bands are masked (GDAL's rule for a dataset
    mask) or non-finite; nodata pixels are left out of the stretch and written as 0. A band
    masked in an otherwise valid pixel is also left out and written as 0. PNG/JPEG carry no
    nodata. A file with no valid pixel is an error naming it.
    """
    path = Path(path)
    if path.suffix.lower() in GEOTIFF_SUFFIXES:
        bands, band_valid, meta = _read_geotiff(path, rgb_bands)
    else:
        bands = _read_plain_image(path, rgb_bands)
        band_valid, meta = np.ones(bands.shape, bool), {"crs": None, "transform": None}
    if np.issubdtype(bands.dtype, np.floating):
        band_valid &= np.isfinite(bands)  # NaN/inf without a declared nodata are still no data
    valid = band_valid.any(axis=2)
    if not valid.any():
        raise UserInputError(
            f"{path}: every pixel is nodata (the file's nodata value, mask or NaN); "
            "remove the scene or fix its nodata"
        )
    rgb = stretch_to_uint8(bands, low_percentile, high_percentile, band_valid, stretch_uint8)
    return np.ascontiguousarray(rgb), valid, meta


def read_image(
    path: str | Path,
    low_percentile: float = 2.0,
    high_percentile: float = 98.0,
    rgb_bands: Sequence[int] = DEFAULT_RGB_BANDS,
) -> tuple[np.ndarray, dict[str, Any]]:
    """RGB uint8 (H,W,3) and {crs, transform}; read_image_and_valid without the valid mask."""
    rgb, _, meta = read_image_and_valid(path, low_percentile, high_percentile, rgb_bands)
    return rgb, meta


def _read_mask_array(path: Path) -> np.ndarray:
    """Raw mask values: (H, W) for single-band files, (H, W, 3) RGB for colour files."""
    if path.suffix.lower() in GEOTIFF_SUFFIXES:
        # a mask's values decide its classes; its own nodata flag is not used
        array, _, _ = _read_geotiff(path)
        return array[..., 0] if array.shape[2] == 1 else array
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise UserInputError(f"{path}: cannot read mask (missing, corrupt or not an image)")
    if array.ndim == 3:
        array = cv2.cvtColor(array[..., :3], cv2.COLOR_BGR2RGB)
    return array


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
    if tuple(array.shape[:2]) != tuple(expected_shape):
        raise UserInputError(
            f"{path}: mask is {array.shape[:2]} but its image is {tuple(expected_shape)}"
        )
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


def read_valid_window(
    path: str | Path, row: int, col: int, height: int, width: int, rgb_bands: Sequence[int] | None = None
) -> np.ndarray | None:
    """bool (height, width): which pixels of a scene image's window hold data, by the rule of
    read_image_and_valid (a pixel is data when any of its chosen bands is unmasked and finite);
    None for PNG/JPEG, which carry no nodata. Reads only the window (rasterio `read_masks`)."""
    path = Path(path)
    if path.suffix.lower() not in GEOTIFF_SUFFIXES:
        return None
    import rasterio
    from rasterio.windows import Window

    window = Window(col, row, width, height)
    try:
        with rasterio.open(path) as src:
            indexes = _select_bands(validate_rgb_bands(rgb_bands), src.count, path)
            valid = src.read_masks(indexes, window=window) != 0
            if np.issubdtype(np.dtype(src.dtypes[0]), np.floating):
                valid &= np.isfinite(src.read(indexes, window=window))
    except rasterio.errors.RasterioError as err:
        raise UserInputError(f"{path}: cannot read GeoTIFF: {err}") from err
    return valid.any(axis=0)
