"""OpenCV GrabCut as a weight-free promptable segmenter.

One ``cv2.grabCut`` call per (tile, class) answers all K prompts of that class at once:

* box modes: outside every box is definite background; box interiors are probable foreground
  (``cam_guided``: probable foreground where the CAM prior > ``prior_threshold``, probable
  background elsewhere); a disk of ``point_radius`` around each point is definite foreground.
  Prompt k's mask is the GrabCut foreground inside box k.
* point-only mode: disks are definite foreground, a disk of ``point_neighbourhood_radius`` around
  each point is probable foreground (``cam_guided``: split by the prior as above), the rest is
  probable background. Prompt k's mask is the connected foreground that touches its disk.

Scores: mean posterior probability of foreground, ``p_fg / (p_fg + p_bg)``, under GrabCut's own
final colour models (two 5-component GMMs), over the prompt's mask pixels; 0.0 for an empty mask.

Degenerate prompts: ``cv2.grabCut`` cannot fit a colour model without at least 5 background and
5 foreground samples (e.g. a box covering the whole tile leaves no background). Then GrabCut is
skipped and the *initial* labelling is returned (foreground = definite + probable foreground),
with score 0.0 meaning "no colour evidence".
"""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np

from wsss_project.validation.schema import check_section

from .base import ImageState, PromptableSegmenter, validate_prompts

logger = logging.getLogger(__name__)

# OpenCV's GrabCut fits GMMs with this many components (a constant of its implementation); its
# k-means initialisation needs at least this many samples on each side.
_GMM_COMPONENTS = 5
_GMM_MODEL_SIZE = 13 * _GMM_COMPONENTS  # per component: 1 weight + 3 means + 9 covariances
_PARAM_PREFIX = "sam_labeling.grabcut"
_RNG_SEED = 0  # fixed: the result must be a function of (image, prompts) alone

GRABCUT_PARAM_KEYS = (
    "iterations",
    "point_radius",
    "point_neighbourhood_radius",
    "cam_guided",
    "prior_threshold",
)


def _require(params: dict[str, Any], key: str) -> Any:
    try:
        return params[key]
    except KeyError as err:
        raise KeyError(f"missing parameter `{_PARAM_PREFIX}.{key}`") from err


def _validate_params(params: dict[str, Any]) -> dict[str, Any]:
    """Read the GrabCut parameters (a missing one is a KeyError naming it), check them by the
    schema's rules for `sam_labeling.grabcut` (written once, there); return them typed."""
    values = {key: _require(params, key) for key in GRABCUT_PARAM_KEYS}
    check_section(params, _PARAM_PREFIX)
    threshold = values["prior_threshold"]
    return {**values, "prior_threshold": None if threshold is None else float(threshold)}


def _box_slices(boxes: np.ndarray, height: int, width: int) -> list[tuple[slice, slice]]:
    """Pixel slices of xyxy boxes (exclusive end), clipped to the image."""
    slices = []
    for x0, y0, x1, y1 in boxes:
        c0, r0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
        c1, r1 = min(int(np.ceil(x1)), width), min(int(np.ceil(y1)), height)
        slices.append((slice(r0, max(r1, r0)), slice(c0, max(c1, c0))))
    return slices


def _disk(height: int, width: int, point: np.ndarray, radius: int) -> np.ndarray:
    """Boolean disk of ``radius`` pixels around an xy point (radius 0 = the pixel itself)."""
    layer = np.zeros((height, width), dtype=np.uint8)
    centre = (int(round(point[0])), int(round(point[1])))
    cv2.circle(layer, centre, radius, 1, thickness=-1)
    return layer.astype(bool)


def _gmm_likelihood(model: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Likelihood of ``(N, 3)`` colours under an OpenCV GrabCut GMM ``(1, 65)`` float64 model."""
    flat = model.reshape(-1)
    weights = flat[:_GMM_COMPONENTS]
    means = flat[_GMM_COMPONENTS : 4 * _GMM_COMPONENTS].reshape(_GMM_COMPONENTS, 3)
    covs = flat[4 * _GMM_COMPONENTS : _GMM_MODEL_SIZE].reshape(_GMM_COMPONENTS, 3, 3)
    total = np.zeros(len(pixels), dtype=np.float64)
    for weight, mean, cov in zip(weights, means, covs, strict=True):
        det = np.linalg.det(cov)
        if weight <= 0 or det <= 0:
            continue
        diff = pixels - mean
        mahalanobis = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
        total += weight * np.exp(-0.5 * mahalanobis) / np.sqrt(det)
    return total


class GrabCutSegmenter(PromptableSegmenter):
    """Weight-free stand-in for SAM: OpenCV GrabCut, optionally guided by the CAM prior.

    Args:
        params: ``sam_labeling.grabcut``: ``iterations``, ``point_radius``,
            ``point_neighbourhood_radius``, ``cam_guided``, ``prior_threshold`` (0..255, or null:
            follow the prompt threshold T, see :meth:`at_threshold`).
    """

    name = "grabcut"

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = _validate_params(params)

    def at_threshold(self, threshold: int) -> GrabCutSegmenter:
        """This segmenter for prompts made at T: an unset ``prior_threshold`` becomes T.

        Only a CAM-guided GrabCut reads the prior threshold; otherwise it is returned unchanged.
        """
        if not self.params["cam_guided"] or self.params["prior_threshold"] is not None:
            return self
        return GrabCutSegmenter({**self.params, "prior_threshold": threshold})

    def embed(self, image: np.ndarray) -> ImageState:
        """GrabCut has no embedding: the state is the image itself."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}"
            )
        return ImageState(arrays={"image": np.ascontiguousarray(image)}, image_shape=image.shape)

    def segment(
        self,
        state: ImageState,
        boxes: np.ndarray | None,
        points: np.ndarray | None,
        prior: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Segment K prompts with one GrabCut call; see the module docstring."""
        image = state.arrays["image"]
        height, width = image.shape[:2]
        boxes, points, num_prompts = validate_prompts(boxes, points)
        if num_prompts == 0:
            return np.zeros((0, height, width), dtype=bool), np.zeros(0, dtype=np.float32)
        if self.params["cam_guided"]:
            if self.params["prior_threshold"] is None:
                raise ValueError(
                    f"`{_PARAM_PREFIX}.prior_threshold` is null (follow T) but no T was given: "
                    "segment with at_threshold(T)"
                )
            if prior is None:
                raise ValueError(
                    f"`{_PARAM_PREFIX}.cam_guided` is true but no CAM prior was passed to segment()"
                )
            if prior.shape != (height, width):
                raise ValueError(f"prior shape {prior.shape} != image shape {(height, width)}")

        has_point = (
            np.zeros(num_prompts, dtype=bool) if points is None else ~np.isnan(points).any(axis=1)
        )
        disks = [
            _disk(height, width, points[k], self.params["point_radius"]) if has_point[k] else None
            for k in range(num_prompts)
        ]
        init, box_slices = self._initial_mask(image.shape[:2], boxes, points, disks, prior)
        foreground, bgd_model, fgd_model = self._run_grabcut(image, init)

        masks = np.zeros((num_prompts, height, width), dtype=bool)
        if box_slices is not None:
            for k, (rows, cols) in enumerate(box_slices):
                masks[k, rows, cols] = foreground[rows, cols]
        else:
            _, labels = cv2.connectedComponents(foreground.astype(np.uint8), connectivity=8)
            for k, disk in enumerate(disks):
                ids = np.unique(labels[disk & foreground])
                masks[k] = np.isin(labels, ids[ids > 0])
        return masks, self._scores(image, masks, bgd_model, fgd_model)

    def _initial_mask(
        self,
        shape: tuple[int, int],
        boxes: np.ndarray | None,
        points: np.ndarray | None,
        disks: list[np.ndarray | None],
        prior: np.ndarray | None,
    ) -> tuple[np.ndarray, list[tuple[slice, slice]] | None]:
        """GrabCut's initial labelling (GC_BGD / GC_PR_BGD / GC_PR_FGD / GC_FGD)."""
        height, width = shape
        region = np.zeros(shape, dtype=bool)
        box_slices = None
        if boxes is not None:
            outside = cv2.GC_BGD
            box_slices = _box_slices(boxes, height, width)
            for rows, cols in box_slices:
                region[rows, cols] = True
        else:
            outside = cv2.GC_PR_BGD
            for point in points:
                region |= _disk(height, width, point, self.params["point_neighbourhood_radius"])
        init = np.full(shape, outside, dtype=np.uint8)
        if self.params["cam_guided"]:
            confident = prior.astype(np.float64) > self.params["prior_threshold"]
            init[region & confident] = cv2.GC_PR_FGD
            init[region & ~confident] = cv2.GC_PR_BGD
        else:
            init[region] = cv2.GC_PR_FGD
        for disk in disks:
            if disk is not None:
                # In box modes a point never makes foreground outside every box.
                init[disk & region if boxes is not None else disk] = cv2.GC_FGD
        return init, box_slices

    def _run_grabcut(
        self, image: np.ndarray, init: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Run GrabCut in mask mode; fall back to the initial labelling when it cannot run."""
        is_fg = (init == cv2.GC_FGD) | (init == cv2.GC_PR_FGD)
        n_fg = int(is_fg.sum())
        n_bg = is_fg.size - n_fg
        if min(n_fg, n_bg) < _GMM_COMPONENTS:
            logger.debug(
                "GrabCut skipped (%d foreground / %d background samples): using the initial mask",
                n_fg,
                n_bg,
            )
            return is_fg, None, None
        mask = init.copy()
        bgd_model = np.zeros((1, _GMM_MODEL_SIZE), dtype=np.float64)
        fgd_model = np.zeros((1, _GMM_MODEL_SIZE), dtype=np.float64)
        # GrabCut seeds its GMMs with k-means on OpenCV's global RNG: reseed per call so a tile's
        # mask does not depend on how many tiles were segmented before it (same seed, same mask).
        cv2.setRNGSeed(_RNG_SEED)
        try:
            cv2.grabCut(
                image,
                mask,
                None,
                bgd_model,
                fgd_model,
                self.params["iterations"],
                cv2.GC_INIT_WITH_MASK,
            )
        except cv2.error as err:
            logger.debug("GrabCut failed (%s): using the initial mask", err)
            return is_fg, None, None
        return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD), bgd_model, fgd_model

    @staticmethod
    def _scores(
        image: np.ndarray,
        masks: np.ndarray,
        bgd_model: np.ndarray | None,
        fgd_model: np.ndarray | None,
    ) -> np.ndarray:
        """Mean foreground posterior of each mask under GrabCut's final colour models."""
        scores = np.zeros(len(masks), dtype=np.float32)
        if bgd_model is None or fgd_model is None:
            return scores
        union = masks.any(axis=0)
        if not union.any():
            return scores
        pixels = image[union].astype(np.float64)
        p_fg = _gmm_likelihood(fgd_model, pixels)
        p_bg = _gmm_likelihood(bgd_model, pixels)
        posterior = np.zeros(union.shape, dtype=np.float64)
        posterior[union] = p_fg / np.maximum(p_fg + p_bg, np.finfo(np.float64).tiny)
        for k, mask in enumerate(masks):
            if mask.any():
                scores[k] = posterior[mask].mean()
        return scores
