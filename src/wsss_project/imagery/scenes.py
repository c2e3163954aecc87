"""Scenes behind one interface that reads one window at a time, so memory follows the tile.

A folder scene (`FolderScene`) holds no pixels: its paths, size, georeferencing, the bands it
reads and the per-band stretch bounds taken once when it is opened. Each window of its RGB
image, validity and class-index mask is read when asked for: GeoTIFFs by rasterio window;
PNG / JPEG, which cannot be read by window, from a whole decode (kept per reading pass by a
`DecodedImages`), so large scenes should be GeoTIFF. Synthetic scenes (`ArrayScene`) are
small and generated: they keep their arrays behind the same interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsss_project.contracts import IGNORE_INDEX
from wsss_project.imagery.readers import (
    BandBounds,
    DecodedImages,
    ImageInfo,
    all_nodata_error,
    apply_stretch,
    check_mask_shape,
    mask_shape,
    read_bands_window,
    read_image_sample,
    read_mask,
    read_mask_window,
    read_valid_window,
    stretch_bounds,
)
from wsss_project.imagery.tiling import TileWindow


class Scene(ABC):
    """One input scene: its source, size, georeferencing (`meta`: crs, transform, image_path) and
    a reader of one window of its image, validity and class-index mask."""

    source: str

    @property
    @abstractmethod
    def height(self) -> int: ...

    @property
    @abstractmethod
    def width(self) -> int: ...

    @property
    @abstractmethod
    def meta(self) -> dict[str, Any]: ...

    @abstractmethod
    def read_image(self, window: TileWindow, cache: DecodedImages | None = None) -> np.ndarray:
        """(h, w, 3) uint8 RGB of the window, nodata written 0."""

    @abstractmethod
    def read_valid(self, window: TileWindow, cache: DecodedImages | None = None) -> np.ndarray:
        """(h, w) bool: the window's pixels with data."""

    @abstractmethod
    def read_mask(self, window: TileWindow, cache: DecodedImages | None = None) -> np.ndarray:
        """(h, w) uint8 class index of the window, IGNORE_INDEX where the image has no data."""

    def whole(self) -> TileWindow:
        """The window of the whole scene."""
        return TileWindow(0, 0, self.height, self.width)


@dataclass
class ArrayScene(Scene):
    """A scene held in memory (synthetic scenes: small and generated): every pixel is valid."""

    image: np.ndarray
    mask: np.ndarray
    source: str
    extra_meta: dict[str, Any] = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def meta(self) -> dict[str, Any]:
        return {"crs": None, "transform": None, "image_path": None, **self.extra_meta}

    def read_image(self, window: TileWindow, cache: DecodedImages | None = None) -> np.ndarray:
        return _part(self.image, window)

    def read_valid(self, window: TileWindow, cache: DecodedImages | None = None) -> np.ndarray:
        return np.ones((window.height, window.width), bool)

    def read_mask(self, window: TileWindow, cache: DecodedImages | None = None) -> np.ndarray:
        return _part(self.mask, window)


def _part(array: np.ndarray, window: TileWindow) -> np.ndarray:
    return array[window.row : window.row + window.height, window.col : window.col + window.width]


@dataclass(frozen=True)
class ReadSettings:
    """How a folder scene is read (the `data.folder` parameters it needs)."""

    rgb_bands: tuple[int, int, int]
    low_percentile: float
    high_percentile: float
    stretch_uint8: bool
    class_values: tuple[int, ...]
    palette: tuple[tuple[int, ...], ...] | None
    stretch_sample_pixels: int


@dataclass(frozen=True)
class SampleStats:
    """What opening a scene read for its stretch: pixels read and how many had no data."""

    pixels: int
    nodata: int
    whole: bool


@dataclass(frozen=True)
class FolderScene(Scene):
    """A scene of a user's folder, read by window (see the module docstring)."""

    image_path: Path
    mask_path: Path
    source: str
    info: ImageInfo
    # per band (low, high) stretch values, or None: uint8 bands kept as read
    stretch: tuple[BandBounds, ...] | None
    class_values: tuple[int, ...]
    palette: tuple[tuple[int, ...], ...] | None

    @property
    def height(self) -> int:
        return self.info.height

    @property
    def width(self) -> int:
        return self.info.width

    @property
    def meta(self) -> dict[str, Any]:
        return {"crs": self.info.crs, "transform": self.info.transform, "image_path": str(self.image_path)}

    def read_image(self, window: TileWindow, cache: DecodedImages | None = None) -> np.ndarray:
        bands, band_valid = read_bands_window(self.image_path, self.info.bands, window, cache)
        return np.ascontiguousarray(apply_stretch(bands, band_valid, self.stretch))

    def read_valid(self, window: TileWindow, cache: DecodedImages | None = None) -> np.ndarray:
        return read_valid_window(self.image_path, self.info.bands, window, cache)

    def read_mask(self, window: TileWindow, cache: DecodedImages | None = None) -> np.ndarray:
        mask = read_mask_window(self.mask_path, window, self.class_values, self.palette, cache)
        # The image decides: where it has no data the mask's class is no evidence for labels
        # or metrics, whatever the mask file says.
        mask[~self.read_valid(window, cache)] = IGNORE_INDEX
        return mask


def open_folder_scene(
    image_path: Path, mask_path: Path, source: str, settings: ReadSettings
) -> tuple[FolderScene, SampleStats]:
    """Open one scene: read its bands once for the stretch and check its image and mask.

    A scene of at most `stretch_sample_pixels` is read whole (and its mask read whole and
    checked, values too); a larger one from a nearest decimation to at most that many pixels,
    its mask's size checked from its header and its values as tiles are cut. A scene without one
    valid pixel in what was read is an error naming the file.
    """
    bands, band_valid, info = read_image_sample(image_path, settings.rgb_bands, settings.stretch_sample_pixels)
    valid = band_valid.any(axis=2)
    whole = valid.shape == (info.height, info.width)
    if not valid.any():
        raise all_nodata_error(image_path, None if whole else valid.size)
    if bands.dtype == np.uint8 and not settings.stretch_uint8:
        bounds = None
    else:
        bounds = stretch_bounds(bands, band_valid, settings.low_percentile, settings.high_percentile)
    stats = SampleStats(int(valid.size), int((~valid).sum()), whole)
    del bands, band_valid, valid
    if whole:
        read_mask(mask_path, (info.height, info.width), settings.class_values, settings.palette)
    else:
        check_mask_shape(mask_path, mask_shape(mask_path), (info.height, info.width))
    scene = FolderScene(
        Path(image_path), Path(mask_path), source, info, bounds, settings.class_values, settings.palette
    )
    return scene, stats


def read_settings(
    rgb_bands: Sequence[int],
    percentiles: tuple[float, float],
    stretch_uint8: bool,
    class_values: Sequence[int],
    palette: Sequence[Sequence[int]] | None,
    stretch_sample_pixels: int,
) -> ReadSettings:
    """ReadSettings from the `data.folder` values (hashable tuples: a FolderScene is frozen)."""
    return ReadSettings(
        tuple(int(b) for b in rgb_bands), float(percentiles[0]), float(percentiles[1]), bool(stretch_uint8),
        tuple(int(v) for v in class_values),
        tuple(tuple(int(c) for c in colour) for colour in palette) if palette else None,
        int(stretch_sample_pixels),
    )
