"""Which segmenter masks a pseudo-mask keeps: PRC's intersection optimisation strategy (IOS) and
per-mask confidences.

PRC (seed 004) cleans SAM's pseudo-labels with an "intersection optimisation strategy"; only its
abstract and usage steps are public, so the rule here is our design of it. A segmenter mask M of
class c (one per prompt) is compared with the CAM region of c, ``R = {H_c > T}`` at the run's
prompt threshold T (the strict cut the prompts were made with):

    IOS(M) = |M ∩ R| / |M|        (intersection over the mask)

counted inside the scene only (the tile's valid window: the CAM is 0 on reflected padding by
contract, and padding is ignore anyway). An empty mask has IOS 0. Intersection over the *mask*,
not over the union: SAM and GrabCut follow image edges and are meant to be tighter or fuller than
the blurred CAM, so a mask that lies inside R but covers only part of it is right; a mask mostly
outside R has leaked into look-alike terrain the classifier did not localise.

With ``sam_labeling.merge: ios`` a mask with IOS < ``sam_labeling.ios.min_overlap`` is rejected;
with ``sam_labeling.min_confidence`` set, so is a mask whose confidence (named by
``sam_labeling.confidence``) is below it. A rejected mask's pixels become ignore (255), not
background: the prompt said the class is near, the check says the mask is not where; neither is
evidence of background. Where a kept mask covers them, the kept mask's class wins.

Every mask, kept or not, is one row of the masks table (:data:`TABLE_COLUMNS`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsss_project.contracts import IGNORE_INDEX

from .base import CONFIDENCES, IOS, PromptableSegmenter, Segmentation

MERGE_SEGMENTER, MERGE_IOS = "segmenter", "ios"
MERGE_MODES = (MERGE_SEGMENTER, MERGE_IOS)
CONFIDENCE_AUTO = "auto"
CONFIDENCE_CHOICES = (CONFIDENCE_AUTO, *CONFIDENCES)
# Why a mask was not kept (the masks table's `rejected_by`; "" = kept). IOS is checked first.
KEPT, REJECTED_BY_IOS, REJECTED_BY_CONFIDENCE = "", "ios", "min_confidence"
REJECTIONS = (REJECTED_BY_IOS, REJECTED_BY_CONFIDENCE)
TABLE_COLUMNS = {
    "tile_id": "string",
    "class_id": "int64",
    "class_name": "string",
    "mask_index": "int64",  # the prompt's prompt_id in `prompts` (its index within the tile and class)
    "area": "int64",  # mask pixels inside the scene
    "score": "float64",  # what overlapping masks are ranked by (SAM: predicted IoU; GrabCut: fg posterior)
    "predicted_iou": "float64",  # NaN where the segmenter does not measure it
    "stability_score": "float64",  # NaN where the segmenter does not measure it
    "ios": "float64",
    "confidence_name": "string",  # the confidence min_confidence reads
    "confidence": "float64",  # its value
    "kept": "bool",
    "rejected_by": "string",  # "" (kept) | ios | min_confidence
}
_PARAM = "sam_labeling"


def intersection_over_mask(masks: np.ndarray, region: np.ndarray) -> np.ndarray:
    """IOS of each of K masks ``(K, H, W)`` with a region ``(H, W)``: |M ∩ R| / |M|, 0 when M is empty."""
    masks = np.asarray(masks, dtype=bool)
    area = masks.sum(axis=(1, 2))
    inside = (masks & np.asarray(region, dtype=bool)).sum(axis=(1, 2))
    return np.where(area > 0, inside / np.maximum(area, 1), 0.0)


def passes_ios(ios: np.ndarray, min_overlap: float) -> np.ndarray:
    """The IOS rule: a mask is kept when ``IOS >= min_overlap``.

    The one place of the inequality: :meth:`MaskRule.judge` (pseudo-labels) and the refinement of
    the final predictions (``prediction_refinement.py``) both use it.
    """
    return np.asarray(ios) >= min_overlap


@dataclass(frozen=True)
class MaskRule:
    """The keep-or-ignore rule of one labelling run (see the module docstring).

    Attributes:
        merge: ``segmenter`` (every mask kept unless min_confidence rejects it) or ``ios``.
        min_overlap: IOS a mask needs under ``merge: ios``.
        min_confidence: None = off; else the confidence a mask needs.
        confidence: the resolved confidence name min_confidence reads (never ``auto``).
        threshold: T; the CAM region is ``heatmap > T``.
    """

    merge: str
    min_overlap: float
    min_confidence: float | None
    confidence: str
    threshold: int

    @classmethod
    def from_params(cls, sam_labeling: dict, segmenter: PromptableSegmenter, threshold: int) -> MaskRule:
        """The rule of ``sam_labeling`` for this segmenter at T; ``confidence: auto`` resolved.

        A confidence the segmenter does not measure is an error naming the parameter, never a
        filter that silently keeps everything.
        """
        # Imported here: the schema imports this module (for its choices).
        from wsss_project.validation.schema import check_section

        keys = ("merge", "ios", "min_confidence", "confidence")
        missing = [key for key in keys if key not in sam_labeling]
        if missing:
            raise KeyError(f"missing parameter `{_PARAM}.{missing[0]}`")
        check_section({key: sam_labeling[key] for key in keys}, _PARAM, partial=True)
        confidence = sam_labeling["confidence"]
        if confidence == CONFIDENCE_AUTO:
            confidence = segmenter.default_confidence
        measured = (*segmenter.confidences, IOS)
        if confidence not in measured:
            raise ValueError(
                f"parameter `{_PARAM}.confidence` is {confidence!r}, which the {segmenter.name} segmenter does not "
                f"measure; choose one of {[CONFIDENCE_AUTO, *measured]}"
            )
        minimum = sam_labeling["min_confidence"]
        return cls(
            merge=sam_labeling["merge"], min_overlap=float(sam_labeling["ios"]["min_overlap"]),
            min_confidence=None if minimum is None else float(minimum), confidence=confidence,
            threshold=int(threshold),
        )

    @property
    def describe(self) -> str:
        """One line for the log: what is kept."""
        parts = [f"merge {self.merge}"]
        if self.merge == MERGE_IOS:
            parts.append(f"IOS >= {self.min_overlap} with CAM > {self.threshold}")
        if self.min_confidence is not None:
            parts.append(f"{self.confidence} >= {self.min_confidence}")
        return ", ".join(parts)

    def judge(self, result: Segmentation, heatmap: np.ndarray, valid: np.ndarray) -> MaskVerdicts:
        """IOS, the confidence read and the verdict of each mask of one prompt set."""
        masks = result.masks & valid
        ios = intersection_over_mask(masks, heatmap > self.threshold)
        confidences = {**result.confidences, IOS: ios}
        confidence = np.asarray(confidences[self.confidence], dtype=np.float64)
        rejected_by = np.full(len(ios), KEPT, dtype=object)
        if self.min_confidence is not None:
            rejected_by[confidence < self.min_confidence] = REJECTED_BY_CONFIDENCE
        if self.merge == MERGE_IOS:
            rejected_by[~passes_ios(ios, self.min_overlap)] = REJECTED_BY_IOS  # checked first: it wins the label
        return MaskVerdicts(masks.sum(axis=(1, 2)), ios, confidence, rejected_by)


@dataclass(frozen=True)
class MaskVerdicts:
    """Per mask of one prompt set: area in the scene, IOS, the confidence read, why rejected."""

    area: np.ndarray
    ios: np.ndarray
    confidence: np.ndarray
    rejected_by: np.ndarray

    @property
    def kept(self) -> np.ndarray:
        return self.rejected_by == KEPT


def ignore_rejected(label: np.ndarray, kept_union: np.ndarray, rejected_union: np.ndarray) -> np.ndarray:
    """``label`` with the pixels of rejected masks that no kept mask covers set to ignore (255)."""
    label[rejected_union & ~kept_union] = IGNORE_INDEX
    return label
