"""The one interface every promptable segmenter implements.

A segmenter embeds an image once (:meth:`PromptableSegmenter.embed`, seconds for SAM on a CPU)
and then answers any number of prompt sets from that embedding
(:meth:`PromptableSegmenter.segment`, milliseconds). The embedding is an :class:`ImageState`:
plain numpy arrays, so it can be cached on disk and shared by every threshold and prompt mode.

Prompt conventions (shared by every backend):

* boxes: ``(K, 4)`` float ``x0, y0, x1, y1`` in pixels of the original image, with an
  *exclusive* end: ``x1 = x0 + w``, ``y1 = y0 + h`` for a ``cv2.boundingRect`` ``(x0, y0, w, h)``;
  box ``k`` covers the pixels ``[y0:y1, x0:x1]``.
* points: ``(K, 2)`` float ``x, y`` in pixels; a NaN row means "no point for this prompt".
* The k-th box and the k-th point are one prompt. Either may be ``None`` (box-only or point-only).

Confidences: :meth:`PromptableSegmenter.segment_scored` returns, besides the masks and the scores
that rank overlapping masks, the per-mask confidences the backend can measure (SAM: its predicted
IoU and stability score; GrabCut none). Every mask's IOS (its agreement with the CAM, computed by
sam_labeling, see :mod:`wsss_project.segmenters.mask_rules`) is a confidence of every backend.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torchvision.ops import box_convert

from wsss_project.contracts import BOX, POINT_BOX, PROMPT_MODES

# Names of the per-mask confidences (columns of the masks table, choices of sam_labeling.confidence).
PREDICTED_IOU = "predicted_iou"
STABILITY_SCORE = "stability_score"
IOS = "ios"
CONFIDENCES = (PREDICTED_IOU, STABILITY_SCORE, IOS)

_SHAPE_KEY = "__image_shape__"
_ARRAY_PREFIX = "state__"


@dataclass
class ImageState:
    """What a backend needs to answer prompts for one image, as numpy arrays only.

    Attributes:
        arrays: backend-specific arrays (SAM: ``embedding``, ``original_size``, ``input_size``;
            GrabCut: ``image``).
        image_shape: shape of the original image, ``(H, W, 3)``.
    """

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    image_shape: tuple[int, ...] = ()

    @property
    def height(self) -> int:
        """Height of the original image in pixels."""
        return int(self.image_shape[0])

    @property
    def width(self) -> int:
        """Width of the original image in pixels."""
        return int(self.image_shape[1])

    def to_npz_dict(self) -> dict[str, np.ndarray]:
        """Flatten into a dict that ``np.savez`` can write (no pickled objects)."""
        flat = {f"{_ARRAY_PREFIX}{name}": np.asarray(value) for name, value in self.arrays.items()}
        pickled = [name for name, value in flat.items() if value.dtype.hasobject]
        if pickled:
            raise ValueError(f"ImageState arrays must be numeric, not objects: {pickled}")
        flat[_SHAPE_KEY] = np.asarray(self.image_shape, dtype=np.int64)
        return flat

    @classmethod
    def from_npz_dict(cls, flat: dict[str, np.ndarray] | np.lib.npyio.NpzFile) -> ImageState:
        """Inverse of :meth:`to_npz_dict`."""
        arrays = {
            key[len(_ARRAY_PREFIX) :]: np.asarray(flat[key])
            for key in flat.keys()
            if key.startswith(_ARRAY_PREFIX)
        }
        shape = tuple(int(v) for v in np.asarray(flat[_SHAPE_KEY]).tolist())
        return cls(arrays=arrays, image_shape=shape)


@dataclass(frozen=True)
class Segmentation:
    """The answer to K prompts: masks, ranking scores and the backend's per-mask confidences.

    Attributes:
        masks: bool ``(K, H, W)``.
        scores: float32 ``(K,)``, what ``merge_class_masks`` ranks overlapping masks by.
        confidences: confidence name (:data:`CONFIDENCES`) -> float ``(K,)``; only those the
            backend measures (its ``confidences`` attribute).
    """

    masks: np.ndarray
    scores: np.ndarray
    confidences: Mapping[str, np.ndarray] = field(default_factory=dict)


class PromptableSegmenter(abc.ABC):
    """Embed an image once, then segment any number of prompt sets from that embedding.

    ``confidences`` names what :meth:`segment_scored` measures per mask beside IOS;
    ``default_confidence`` is the one ``sam_labeling.min_confidence`` reads when
    ``sam_labeling.confidence`` is ``auto``.
    """

    name: str
    confidences: tuple[str, ...] = ()
    default_confidence: str = IOS

    def at_threshold(self, threshold: int) -> PromptableSegmenter:
        """This segmenter for prompts made at CAM threshold T (0..255).

        A backend whose settings follow T (GrabCut's unset ``prior_threshold``) returns a
        configured copy; the rest return themselves, so one loaded model serves every T.
        """
        return self

    @abc.abstractmethod
    def embed(self, image: np.ndarray) -> ImageState:
        """Compute the reusable state of an RGB uint8 ``(H, W, 3)`` image."""

    @abc.abstractmethod
    def segment(
        self,
        state: ImageState,
        boxes: np.ndarray | None,
        points: np.ndarray | None,
        prior: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Segment K prompts of one class on one embedded image.

        Args:
            state: output of :meth:`embed`.
            boxes: ``(K, 4)`` xyxy boxes or ``None``.
            points: ``(K, 2)`` xy points (NaN rows = no point) or ``None``.
            prior: optional ``(H, W)`` uint8 CAM heatmap 0..255 of the class (backends may ignore
                it).

        Returns:
            ``masks`` bool ``(K, H, W)`` and ``scores`` float32 ``(K,)``.
        """

    def segment_scored(
        self,
        state: ImageState,
        boxes: np.ndarray | None,
        points: np.ndarray | None,
        prior: np.ndarray | None = None,
    ) -> Segmentation:
        """:meth:`segment` with the backend's per-mask confidences (none unless it overrides this)."""
        masks, scores = self.segment(state, boxes, points, prior)
        return Segmentation(masks, scores)


def validate_prompts(
    boxes: np.ndarray | None, points: np.ndarray | None
) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    """Check prompt shapes, return them as float64 arrays and the number of prompts K."""
    if boxes is None and points is None:
        raise ValueError("segment() needs boxes, points or both; got neither")
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if not np.all(np.isfinite(boxes)):
            raise ValueError("boxes must be finite (no NaN / inf)")
    if points is not None:
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if boxes is not None and points is not None and len(boxes) != len(points):
        raise ValueError(
            f"boxes and points must pair up: got {len(boxes)} boxes and {len(points)} points"
        )
    if boxes is None and points is not None and np.isnan(points).any():
        raise ValueError(
            "point-only prompts must not contain NaN points (drop them with prompts_for_mode)"
        )
    num_prompts = len(boxes) if boxes is not None else len(points)
    return boxes, points, num_prompts


def xywh_to_xyxy(boxes_xywh: np.ndarray) -> np.ndarray:
    """Convert ``cv2.boundingRect`` boxes ``(x0, y0, w, h)`` to ``(x0, y0, x0 + w, y0 + h)``."""
    boxes = torch.from_numpy(np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4))
    return box_convert(boxes, in_fmt="xywh", out_fmt="xyxy").numpy()


def prompts_for_mode(
    boxes_xywh: np.ndarray, points: np.ndarray, mode: str
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
    """Select the prompts that a prompt mode uses.

    Args:
        boxes_xywh: ``(K, 4)`` ``cv2.boundingRect`` boxes ``x0, y0, w, h``.
        points: ``(K, 2)`` centroids ``x, y`` (NaN rows = no centroid).
        mode: ``point_box`` (box + point, NaN points fall back to box only), ``box`` or ``point``
            (prompts without a point are dropped).

    Returns:
        ``(boxes_xyxy or None, points or None, kept)`` where ``kept`` are the indices into the
        K input prompts of the prompts returned, in order.
    """
    if mode not in PROMPT_MODES:  # the schema's message for its rule (PROMPT_MODES), only when it fails
        # Imported here: the schema imports the segmenters.
        from wsss_project.validation.schema import check_section

        check_section({"prompt_mode": mode}, "sam_labeling", partial=True)
    boxes_xyxy = xywh_to_xyxy(boxes_xywh)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(boxes_xyxy) != len(points):
        raise ValueError(f"got {len(boxes_xyxy)} boxes but {len(points)} points")
    if mode == POINT_BOX:
        return boxes_xyxy, points, np.arange(len(points))
    if mode == BOX:
        return boxes_xyxy, None, np.arange(len(points))
    kept = np.flatnonzero(~np.isnan(points).any(axis=1))
    return None, points[kept], kept
