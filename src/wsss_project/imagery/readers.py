"""Reading a user's folder of imagery: PNG, JPEG and GeoTIFF scenes with their masks."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

GEOTIFF_SUFFIXES = (".tif", ".tiff")
IGNORE_VALUE = 255
MAX_LISTED_VALUES = 5


@dataclass(frozen=True)
class SceneFile:
    """One scene: its id (the file stem), image path and mask path."""

    scene_id: str
    image_path: Path
    mask_path: Path | None


def _files_by_stem(directory: Path, extensions: Sequence[str], parameter: str) -> dict[str, Path]:
    """Files of `directory` with one of `extensions` (any case), keyed by stem; stems unique."""
    if not directory.is_dir():
        raise FileNotFoundError(f"parameter `{parameter}`: directory {directory} does not exist")
    wanted = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        # hidden files (macOS "._x.png" resource forks, editor backups) are never imagery
        if path.name.startswith("."):
            continue
        if path.is_file() and path.suffix.lower() in wanted:
            if path.stem in found:
                raise ValueError(
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
        raise ValueError(
            f"parameter `data.folder.images_dir`: no images with extensions {list(extensions)} in {images_dir}"
        )
    if masks_dir is None:
        return [SceneFile(stem, path, None) for stem, path in images.items()]
    masks = _files_by_stem(Path(masks_dir), extensions, "data.folder.masks_dir")
    missing = sorted(set(images) - set(masks))
    if missing:
        raise FileNotFoundError(
            f"parameter `data.folder.masks_dir`: no mask in {masks_dir} for image(s) "
            f"{', '.join(images[s].name for s in missing[:MAX_LISTED_VALUES])}"
            + (
                f" and {len(missing) - MAX_LISTED_VALUES} more"
                if len(missing) > MAX_LISTED_VALUES
                else ""
            )
        )
    return [SceneFile(stem, images[stem], masks[stem]) for stem in images]


def stretch_to_uint8(
    array: np.ndarray, low_percentile: float = 2.0, high_percentile: float = 98.0
) -> np.ndarray:
    """Map a non-uint8 image to 0..255 by a per-image percentile stretch (as GIS viewers do)."""
    if array.dtype == np.uint8:
        return array
    values = array.astype(np.float64)
    low, high = np.percentile(values, [low_percentile, high_percentile])
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.clip((values - low) * scale, 0, 255).round().astype(np.uint8)


def _to_rgb(array: np.ndarray, path: Path) -> np.ndarray:
    """(H,W) -> 3 channels; drop alpha; anything else is an error naming the file."""
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return np.ascontiguousarray(array[..., :3])
    if array.ndim == 3 and array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    raise ValueError(f"{path}: expected a grey, RGB or RGBA image, got shape {array.shape}")


def _read_geotiff(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Up to the first 3 bands as (H, W, C), with the CRS string and the 6 affine coefficients."""
    import rasterio  # only GeoTIFF users pay for the import

    try:
        with rasterio.open(path) as src:
            bands = src.read(list(range(1, min(src.count, 3) + 1)))
            crs = src.crs.to_string() if src.crs else None
            transform = (
                list(src.transform)[:6] if src.transform and not src.transform.is_identity else None
            )
    except rasterio.errors.RasterioError as err:
        raise ValueError(f"{path}: cannot read GeoTIFF: {err}") from err
    return np.moveaxis(bands, 0, -1), {"crs": crs, "transform": transform}


def read_image(
    path: str | Path, low_percentile: float = 2.0, high_percentile: float = 98.0
) -> tuple[np.ndarray, dict[str, Any]]:
    """RGB uint8 (H,W,3) and {crs, transform} (None for plain PNG/JPEG)."""
    path = Path(path)
    if path.suffix.lower() in GEOTIFF_SUFFIXES:
        array, meta = _read_geotiff(path)
    else:
        array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if array is None:
            raise ValueError(f"{path}: cannot read image (missing, corrupt or not an image)")
        if array.ndim == 3:
            code = cv2.COLOR_BGRA2RGBA if array.shape[2] == 4 else cv2.COLOR_BGR2RGB
            array = cv2.cvtColor(array, code)
        meta = {"crs": None, "transform": None}
    rgb = _to_rgb(stretch_to_uint8(array, low_percentile, high_percentile), path)
    return rgb, meta


def _read_mask_array(path: Path) -> np.ndarray:
    """Raw mask values: (H, W) for single-band files, (H, W, 3) RGB for colour files."""
    if path.suffix.lower() in GEOTIFF_SUFFIXES:
        array, _ = _read_geotiff(path)
        return array[..., 0] if array.shape[2] == 1 else array
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ValueError(f"{path}: cannot read mask (missing, corrupt or not an image)")
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
        raise ValueError(
            f"{path}: mask is {array.shape[:2]} but its image is {tuple(expected_shape)}"
        )
    out = np.full(array.shape[:2], IGNORE_VALUE, dtype=np.uint8)
    if palette is not None:
        rgb = array if array.ndim == 3 else np.repeat(array[..., None], 3, axis=2)
        # white is "ignore" like value 255, unless a class is white (Potsdam's impervious surface)
        known = np.all(rgb == IGNORE_VALUE, axis=2)
        for index, colour in enumerate([(0, 0, 0), *palette]):
            hit = np.all(rgb == np.asarray(colour, dtype=rgb.dtype), axis=2)
            out[hit], known = index, known | hit
        if not known.all():
            bad = np.unique(rgb[~known].reshape(-1, 3), axis=0)[:MAX_LISTED_VALUES]
            raise ValueError(
                f"{path}: colours {bad.tolist()} match no class of `data.folder.mask_palette`"
            )
        return out
    if array.ndim == 3:
        if not (array == array[..., :1]).all():
            raise ValueError(
                f"{path}: mask is colour; set `data.folder.mask_palette` for RGB masks"
            )
        array = array[..., 0]
    known = (array == 0) | (array == IGNORE_VALUE)
    out[array == 0] = 0
    for index, value in enumerate(class_values, start=1):
        hit = array == value
        out[hit], known = index, known | hit
    if not known.all():
        bad = np.unique(array[~known])[:MAX_LISTED_VALUES]
        raise ValueError(
            f"{path}: values {bad.tolist()} match no class of `data.folder.mask_class_values` {list(class_values)}"
        )
    return out


def write_georeferenced_mask(path: str | Path, mask: np.ndarray, meta: dict[str, Any]) -> None:
    """Write a single-band uint8 GeoTIFF with the scene's CRS and transform, atomically."""
    import rasterio
    from affine import Affine

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    transform = Affine(*meta["transform"]) if meta.get("transform") else None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        with rasterio.open(
            tmp,
            "w",
            driver="GTiff",
            height=mask.shape[0],
            width=mask.shape[1],
            count=1,
            dtype="uint8",
            crs=meta.get("crs"),
            transform=transform,
        ) as dst:
            dst.write(mask.astype(np.uint8), 1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
