"""Region sets of an image without prompts: superpixels (weight-free) or SAM's automatic masks.

ALPS (seed 002, "Binary Mask Prediction") makes its unlabelled regions in three steps, kept here
as three pieces a caller can use apart:

1. Regions without prompts (eq. 1, ``UiMs = S(I, P)``): SAM's automatic mask generator on a
   dense point grid (:class:`SamAutoRegions`), or, weight-free, superpixels
   (:class:`SuperpixelRegions`: scikit-image SLIC or Felzenszwalb).
2. Binary mask decomposition: every region becomes one binary mask of the image
   (:func:`decompose_label_map` for a label map; SAM's generator already gives one binary mask
   per region). A :class:`RegionSet` holds them, largest first.
3. The filtering gate (eq. 2-3, :func:`instance_proportion`, :func:`area_gate`): a mask whose
   instance proportion exceeds sigma is an overly large background region and is dropped.

Model code only: how regions are *used* (voting with the CAM, ``sam_labeling.segmenter:
regions``) lives in ``region_voting.py``.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where SAM runs: the factory's choice of segmenter needs none
    import torch

logger = logging.getLogger(__name__)

SUPERPIXELS, SAM_AUTO = "superpixels", "sam_auto"
REGION_SOURCES = (SUPERPIXELS, SAM_AUTO)
SLIC, FELZENSZWALB = "slic", "felzenszwalb"
SUPERPIXEL_METHODS = (SLIC, FELZENSZWALB)
# The keys of sam_labeling.regions.sam_auto, passed as they are to SamAutomaticMaskGenerator.
SAM_AUTO_KEYS = (
    "points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh",
    "stability_score_offset", "box_nms_thresh", "crop_n_layers", "min_mask_region_area",
)
_PARAM_PREFIX = "sam_labeling.regions"


# --------------------------------------------------------------------------- ALPS eq. 2-3


def instance_proportion(masks: np.ndarray) -> np.ndarray:
    """ALPS eq. 2, per binary mask: the share of the image's pixels that the instance covers.

    ``PI(M_i) = num(p_i^0) / num(p_i^0 + p_i^255)``, where ``p_i^0`` are the instance's pixels and
    ``p_i^255`` the mask's background pixels, so the denominator is every pixel of the image.

    Args:
        masks: bool ``(R, H, W)``, one binary mask per region.

    Returns:
        float64 ``(R,)`` in [0, 1].
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"expected binary masks (R, H, W), got shape {masks.shape}")
    pixels = masks.shape[1] * masks.shape[2]
    return masks.reshape(len(masks), -1).sum(axis=1) / max(pixels, 1)


def passes_area_gate(proportion: np.ndarray, sigma: float) -> np.ndarray:
    """ALPS eq. 3's condition: a region is kept when ``PI(M_i) <= sigma``, dropped when above.

    The one place of the inequality (:func:`area_gate` and :meth:`RegionSet.gated` use it).
    """
    return np.asarray(proportion) <= sigma


def area_gate(masks: np.ndarray, sigma: float) -> np.ndarray:
    """ALPS eq. 3, the filtering gate: which binary masks are kept.

    ``G(M_i) = M_i if PI(M_i) <= sigma; discarded if PI(M_i) > sigma`` (PI of eq. 2,
    :func:`instance_proportion`). ALPS uses sigma = 0.3: the overly large masks SAM gives for the
    background would otherwise swamp the instances; sigma = 1 keeps every mask.

    Returns:
        bool ``(R,)``: True for the masks kept.
    """
    return passes_area_gate(instance_proportion(masks), sigma)


# --------------------------------------------------------------------------- region sets


def decompose_label_map(label_map: np.ndarray) -> np.ndarray:
    """Binary mask decomposition: one bool ``(H, W)`` mask per distinct label, in label order.

    ALPS splits SAM's colour bitmap into one binary mask per colour; a superpixel label map is
    split the same way. Negative labels mean "no region" and give no mask.
    """
    label_map = np.asarray(label_map)
    labels = np.unique(label_map[label_map >= 0])
    return label_map[None] == labels[:, None, None]


@dataclass(frozen=True)
class RegionSet:
    """The regions of one image: flat pixel indices per region, largest region first.

    Regions may overlap (SAM's masks nest whole / part / subpart) and may leave pixels uncovered.
    Largest first, so :meth:`paint` leaves the smallest (most specific) region on top, as SAM's own
    mask display does.

    Attributes:
        shape: ``(H, W)`` of the image.
        pixels: one int64 array of flat indices (``row * W + col``) per region.
    """

    shape: tuple[int, int]
    pixels: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.pixels)

    @classmethod
    def from_masks(cls, masks: np.ndarray) -> RegionSet:
        """From binary masks ``(R, H, W)`` (empty masks are dropped)."""
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 3:
            raise ValueError(f"expected binary masks (R, H, W), got shape {masks.shape}")
        pixels = [np.flatnonzero(mask) for mask in masks]
        return cls._sorted(masks.shape[1:], [p for p in pixels if len(p)])

    @classmethod
    def from_label_map(cls, label_map: np.ndarray) -> RegionSet:
        """From a label map ``(H, W)``: one region per distinct label >= 0 (the same regions as
        :func:`decompose_label_map`, without materialising ``R`` full-size masks)."""
        label_map = np.asarray(label_map)
        if label_map.ndim != 2:
            raise ValueError(f"expected a label map (H, W), got shape {label_map.shape}")
        flat = label_map.ravel()
        order = np.argsort(flat, kind="stable")
        labels, starts = np.unique(flat[order], return_index=True)
        groups = np.split(order, starts[1:])
        pixels = [group for label, group in zip(labels, groups, strict=True) if label >= 0]
        return cls._sorted(label_map.shape, pixels)

    @classmethod
    def _sorted(cls, shape: tuple[int, ...], pixels: list[np.ndarray]) -> RegionSet:
        areas = np.array([len(p) for p in pixels], dtype=np.int64)
        order = np.argsort(-areas, kind="stable")  # largest first, ties in the given order
        return cls(shape=(int(shape[0]), int(shape[1])), pixels=tuple(pixels[i] for i in order))

    def areas(self) -> np.ndarray:
        """Pixels per region, int64 ``(R,)``."""
        return np.array([len(p) for p in self.pixels], dtype=np.int64)

    def masks(self) -> np.ndarray:
        """The regions as binary masks, bool ``(R, H, W)`` (ALPS's binary mask set)."""
        masks = np.zeros((len(self), self.shape[0] * self.shape[1]), dtype=bool)
        for row, pixels in enumerate(self.pixels):
            masks[row, pixels] = True
        return masks.reshape(len(self), *self.shape)

    def proportions(self) -> np.ndarray:
        """ALPS eq. 2 per region (:func:`instance_proportion`), from the areas."""
        return self.areas() / max(self.shape[0] * self.shape[1], 1)

    def gated(self, sigma: float) -> RegionSet:
        """The regions that pass ALPS's filtering gate (eq. 3, :func:`passes_area_gate`)."""
        keep = passes_area_gate(self.proportions(), sigma)
        return RegionSet(self.shape, tuple(p for p, k in zip(self.pixels, keep, strict=True) if k))

    def means(self, values: np.ndarray) -> np.ndarray:
        """Mean of a ``(H, W)`` array over each region, float64 ``(R,)``."""
        values = np.asarray(values)
        if values.shape != self.shape:
            raise ValueError(f"values of shape {values.shape} do not match the regions' image {self.shape}")
        flat = values.ravel().astype(np.float64)
        return np.array([flat[p].mean() for p in self.pixels], dtype=np.float64)

    def paint(self, region_values: np.ndarray, fill: int) -> np.ndarray:
        """A uint8 ``(H, W)`` map: each region's value, ``fill`` where no region lies.

        Regions are painted largest first: where they overlap, the smallest region's value wins.
        """
        region_values = np.asarray(region_values)
        if len(region_values) != len(self):
            raise ValueError(f"got {len(region_values)} values for {len(self)} regions")
        painted = np.full(self.shape[0] * self.shape[1], fill, dtype=np.uint8)
        for pixels, value in zip(self.pixels, region_values, strict=True):
            painted[pixels] = value
        return painted.reshape(self.shape)


# --------------------------------------------------------------------------- region sources


class RegionSource(abc.ABC):
    """Makes the gated region set of an RGB uint8 image (``sam_labeling.regions``).

    Args:
        area_gate: sigma of ALPS's filtering gate (regions covering more than this share of the
            image are dropped; 1 keeps all).
    """

    name = "regions"
    source: str

    def __init__(self, area_gate: float) -> None:
        self.area_gate = float(area_gate)

    def regions(self, image: np.ndarray) -> RegionSet:
        """The regions of ``image`` that pass the area gate (possibly none)."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        return self.all_regions(image).gated(self.area_gate)

    @abc.abstractmethod
    def all_regions(self, image: np.ndarray) -> RegionSet:
        """Every region of ``image``, before the area gate."""


class SuperpixelRegions(RegionSource):
    """scikit-image superpixels: a partition of the image (every pixel in exactly one region).

    ``method: slic`` (the default) with ``slic: {n_segments, compactness, sigma}``, or
    ``method: felzenszwalb`` with ``felzenszwalb: {scale, sigma, min_size}`` (scikit-image's
    parameters of the same names). SLIC is the default because its regions have a bounded size
    (about the image area / n_segments): voting needs regions no coarser than a landslide, and a
    region larger than sigma would fall to the area gate and leave a hole. Felzenszwalb follows
    colour edges more closely but, on our tiles, made single regions of 40 % of a tile.
    """

    source = SUPERPIXELS

    def __init__(self, params: dict[str, Any], area_gate: float) -> None:
        super().__init__(area_gate)
        self.method = params["method"]
        self.params = dict(params[self.method])

    def all_regions(self, image: np.ndarray) -> RegionSet:
        # Imported here: only this source needs scikit-image.
        from skimage.segmentation import felzenszwalb, slic

        if self.method == SLIC:
            p = self.params
            labels = slic(image, n_segments=p["n_segments"], compactness=p["compactness"], sigma=p["sigma"],
                          start_label=0, channel_axis=-1)
        else:
            p = self.params
            labels = felzenszwalb(image, scale=p["scale"], sigma=p["sigma"], min_size=p["min_size"], channel_axis=-1)
        return RegionSet.from_label_map(labels)


class SamAutoRegions(RegionSource):
    """SAM's automatic masks (segment_anything's ``SamAutomaticMaskGenerator``), ALPS eq. 1.

    Args:
        model: a loaded SAM (:func:`wsss_project.foundation.sam.load_sam`).
        params: ``sam_labeling.regions.sam_auto``: the generator's ``points_per_side``,
            ``points_per_batch``, ``pred_iou_thresh``, ``stability_score_thresh``,
            ``stability_score_offset``, ``box_nms_thresh``, ``crop_n_layers``,
            ``min_mask_region_area``.
        area_gate: sigma.

    A tile for which SAM keeps no mask (a weak or random-weight model, a featureless tile) has an
    empty region set; the labeller then treats every pixel as uncovered.
    """

    source = SAM_AUTO

    def __init__(self, model: torch.nn.Module, params: dict[str, Any], area_gate: float) -> None:
        from segment_anything import SamAutomaticMaskGenerator

        super().__init__(area_gate)
        self.generator = SamAutomaticMaskGenerator(model.eval(), output_mode="binary_mask",
                                                   **{key: params[key] for key in SAM_AUTO_KEYS})

    def all_regions(self, image: np.ndarray) -> RegionSet:
        import torch

        with torch.inference_mode():
            records = self.generator.generate(image)
        if not records:
            return RegionSet(shape=(image.shape[0], image.shape[1]), pixels=())
        return RegionSet.from_masks(np.stack([record["segmentation"] for record in records]))


def build_region_source(regions: dict[str, Any], sam_model: torch.nn.Module | None = None) -> RegionSource:
    """The region source of ``sam_labeling.regions`` (checked by the schema's rules).

    Args:
        regions: ``sam_labeling.regions``: ``source`` (superpixels | sam_auto), ``area_gate``,
            ``superpixels`` and ``sam_auto``.
        sam_model: the loaded SAM, needed for ``source: sam_auto``.
    """
    # Imported here: the schema imports this module.
    from wsss_project.validation.schema import check_section

    check_section(regions, _PARAM_PREFIX)
    if regions["source"] == SUPERPIXELS:
        return SuperpixelRegions(regions["superpixels"], regions["area_gate"])
    if sam_model is None:
        raise ValueError(f"`{_PARAM_PREFIX}.source: {SAM_AUTO}` needs a loaded SAM")
    return SamAutoRegions(sam_model, regions["sam_auto"], regions["area_gate"])
