"""Adaptive Prompt Generation (APG) of APSAM, Algorithm 1 and eqs. 2-8.

A CAM heatmap ``H`` (uint8, 0..255) is binarised with a strict threshold (eq. 2), the
contours of the binary image are found (eq. 3) and every contour ``c_k`` gives one box
prompt ``b_k = boundingRect(c_k)`` (eq. 4) and, when its zero-order moment is positive,
one point prompt at its moment centroid ``(m10 / m00, m01 / m00)`` (eqs. 5-6).

Coordinates are OpenCV pixel coordinates: ``x`` is the column, ``y`` the row, and pixel
``(x, y)`` has its centre at the integer position ``(x, y)``. A box covers the columns
``x0 .. x0 + w - 1`` and the rows ``y0 .. y0 + h - 1``.

Why a centroid can lie outside its contour: ``cv2.moments`` of a contour integrates over
the polygon the contour encloses, and the centroid of a non-convex polygon (a "C", an "L",
a ring-like landslide scar wrapping around a hill) need not lie inside that polygon. The
paper keeps such a point; so does :func:`adaptive_prompts` by default, and
``snap_points_inside=True`` moves it to the nearest pixel of the blob instead, because a
positive SAM point on background asks SAM to segment the background.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd

from wsss_project.contracts import HEATMAP_MAX
from wsss_project.errors import UserInputError

THRESHOLD_PARAM = "prompt_generation.threshold"

RETRIEVAL_MODES: dict[str, int] = {
    "external": cv2.RETR_EXTERNAL,
    "list": cv2.RETR_LIST,
    "ccomp": cv2.RETR_CCOMP,
    "tree": cv2.RETR_TREE,
}

PROMPT_COLUMNS: dict[str, str] = {
    "tile_id": "object",
    "class_id": "int64",
    "prompt_id": "int64",
    "x0": "int64",
    "y0": "int64",
    "w": "int64",
    "h": "int64",
    "px": "float64",
    "py": "float64",
    "area": "float64",
}


@dataclass(frozen=True)
class Prompt:
    """One contour's prompts: box ``(x0, y0, w, h)``, point ``(px, py)``, contour area.

    ``px`` and ``py`` are NaN when the contour has zero area (``m00 == 0``: a single pixel
    or a one-pixel-wide line), where eq. 6 leaves the centroid undefined. The box is still
    a valid prompt.
    """

    x0: int
    y0: int
    w: int
    h: int
    px: float
    py: float
    area: float

    @property
    def has_point(self) -> bool:
        """Whether the contour produced a point prompt (``m00 > 0``)."""
        return not (math.isnan(self.px) or math.isnan(self.py))


def _validate(heatmap: np.ndarray, threshold: int, retrieval: str) -> None:
    if not isinstance(heatmap, np.ndarray) or heatmap.ndim != 2 or heatmap.dtype != np.uint8:
        shape = getattr(heatmap, "shape", None)
        dtype = getattr(heatmap, "dtype", type(heatmap).__name__)
        raise ValueError(f"heatmap must be a 2-D uint8 array, got shape {shape} dtype {dtype}")
    # bool is an int subclass; a True threshold is a configuration mistake, not T = 1.
    if isinstance(threshold, bool) or not isinstance(threshold, int | np.integer):
        raise ValueError(
            f"{THRESHOLD_PARAM} must be an int in [0, {HEATMAP_MAX}], got {threshold!r}"
        )
    if not 0 <= threshold <= HEATMAP_MAX:
        raise UserInputError(f"{THRESHOLD_PARAM} must be in [0, {HEATMAP_MAX}], got {threshold}")
    if retrieval not in RETRIEVAL_MODES:
        raise ValueError(f"retrieval must be one of {sorted(RETRIEVAL_MODES)}, got {retrieval!r}")


def binarise(heatmap: np.ndarray, threshold: int) -> np.ndarray:
    """APSAM eq. 2: ``B = 1`` where ``H > T`` (strict), as a uint8 0/1 image."""
    return (heatmap > threshold).astype(np.uint8)


def _centroid(contour: np.ndarray) -> tuple[float, float]:
    """Eqs. 5-6: moment centroid, NaN when ``m00 == 0`` (undefined in the paper)."""
    moments = cv2.moments(contour)
    if moments["m00"] == 0:
        return math.nan, math.nan
    return moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]


def _snap_inside(
    contour: np.ndarray, binary: np.ndarray, px: float, py: float
) -> tuple[float, float]:
    """Move ``(px, py)`` to the nearest blob pixel if it is not on one already.

    The blob is the filled contour intersected with the binary image, so a point in a
    hole of a ring-shaped region also moves onto the region itself.
    """
    blob = np.zeros_like(binary)
    cv2.drawContours(blob, [contour], contourIdx=-1, color=1, thickness=cv2.FILLED)
    blob &= binary
    col, row = int(round(px)), int(round(py))
    height, width = binary.shape
    if 0 <= row < height and 0 <= col < width and blob[row, col]:
        return px, py
    rows, cols = np.nonzero(blob)
    if rows.size == 0:  # cannot happen for a contour of `binary`; keep the paper's point
        return px, py
    nearest = int(np.argmin((cols - px) ** 2 + (rows - py) ** 2))
    return float(cols[nearest]), float(rows[nearest])


def adaptive_prompts(
    heatmap: np.ndarray,
    threshold: int,
    min_contour_area: float = 0,
    min_box_side: int = 0,
    retrieval: str = "external",
    snap_points_inside: bool = False,
) -> list[Prompt]:
    """Box and point prompts of one CAM heatmap, APSAM Algorithm 1 lines 6-13.

    Args:
        heatmap: ``(H, W)`` uint8 CAM heatmap.
        threshold: ``T`` of eq. 2; pixels with ``H > T`` are foreground.
        min_contour_area: drop contours whose ``cv2.contourArea`` is below this (0 = off).
        min_box_side: drop contours whose box is thinner than this in w or h (0 = off).
        retrieval: ``cv2.findContours`` mode: external (the paper), list, ccomp or tree.
        snap_points_inside: move centroids that miss their blob onto its nearest pixel.

    Returns:
        One :class:`Prompt` per kept contour, sorted by box top-left corner (row, then
        column) so that prompt ids are stable and readable.
    """
    _validate(heatmap, threshold, retrieval)
    if min_contour_area < 0 or min_box_side < 0:
        raise ValueError("min_contour_area and min_box_side must be >= 0")
    binary = binarise(heatmap, threshold)
    contours, _ = cv2.findContours(binary, RETRIEVAL_MODES[retrieval], cv2.CHAIN_APPROX_SIMPLE)

    prompts = []
    for contour in contours:
        area = float(cv2.contourArea(contour))
        x0, y0, w, h = (int(v) for v in cv2.boundingRect(contour))
        if area < min_contour_area or min(w, h) < min_box_side:
            continue
        px, py = _centroid(contour)
        if snap_points_inside and not math.isnan(px):
            px, py = _snap_inside(contour, binary, px, py)
        prompts.append(Prompt(x0=x0, y0=y0, w=w, h=h, px=px, py=py, area=area))
    return sorted(prompts, key=lambda p: (p.y0, p.x0, -p.area))


def empty_prompts_table() -> pd.DataFrame:
    """A prompts table with no rows but the contract's columns and dtypes."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in PROMPT_COLUMNS.items()})


def prompts_table(records: Iterable[tuple[str, int, list[Prompt]]]) -> pd.DataFrame:
    """The ``prompts`` dataset: one row per prompt of every ``(tile_id, class_id)``.

    ``prompt_id`` counts ``0 .. K-1`` within each ``(tile_id, class_id)``, also when one
    pair comes in several records (their prompts are numbered on in record order).
    """
    rows = [
        {
            "tile_id": str(tile_id),
            "class_id": int(class_id),
            "prompt_id": 0,  # numbered below, per (tile_id, class_id)
            "x0": prompt.x0,
            "y0": prompt.y0,
            "w": prompt.w,
            "h": prompt.h,
            "px": prompt.px,
            "py": prompt.py,
            "area": prompt.area,
        }
        for tile_id, class_id, prompts in records
        for prompt in prompts
    ]
    if not rows:
        return empty_prompts_table()
    table = pd.DataFrame(rows, columns=list(PROMPT_COLUMNS))
    table["prompt_id"] = table.groupby(["tile_id", "class_id"], sort=False).cumcount()
    return table.astype(PROMPT_COLUMNS)
