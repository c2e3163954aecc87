"""segment-anything (SAM) behind the promptable-segmenter interface.

``embed`` runs SAM's image encoder once (ResizeLongestSide, SAM's own normalisation and padding);
``segment`` answers all K prompts of a tile in one batched ``SamPredictor.predict_torch`` call
from that embedding. Which of SAM's mask heads answers follows ``multimask_output``:

* ``auto`` (default): a prompt set with boxes (box or point+box) takes SAM's single-mask output
  (mask token 0, ``multimask_output=False``): SamPredictor.predict documents the three-mask output
  as the remedy for ambiguous prompts such as a single click, and a box is not one. A point-only
  prompt set keeps the best of SAM's three masks by predicted IoU.
* ``true``: always the best of three by predicted IoU; ``false``: always the single mask.

The choice is per prompt set, by whether boxes are given: in point+box mode a row whose point is
NaN still has its box. Such a row gets a padding point with label -1 ("not a point", as SAM's
prompt encoder pads point-only prompts), so the batch stays one call.

Confidences (:meth:`SamSegmenter.segment_scored`), of the mask returned for each prompt:

* ``predicted_iou``: SAM's IoU head for that mask (also the score that ranks overlapping masks);
* ``stability_score``: segment_anything's ``calculate_stability_score``, as
  ``SamAutomaticMaskGenerator`` computes it: the IoU of the mask cut at ``mask_threshold +
  offset`` and at ``mask_threshold - offset`` of the predictor's logits at the image's size (the
  logits the mask itself is cut from), ``offset`` = ``sam_labeling.sam.stability_score_offset``.
  A mask empty even at the lower cutoff has stability 0.

``sam_labeling.confidence: auto`` reads the stability score: it is measured on the mask's own
logits, whereas the IoU head is a learned regressor whose calibration does not carry over to
imagery unlike SAM's training set (remote sensing) or to untrained weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import Sam
from segment_anything.utils.amg import calculate_stability_score

from .base import (
    PREDICTED_IOU,
    STABILITY_SCORE,
    ImageState,
    PromptableSegmenter,
    Segmentation,
    validate_prompts,
)

_PARAM_PREFIX = "sam_labeling.sam"
_FOREGROUND_LABEL = 1
_NOT_A_POINT_LABEL = -1
MULTIMASK_CHOICES = ("auto", "true", "false")
SAM_CONFIDENCES = (PREDICTED_IOU, STABILITY_SCORE)


def parse_multimask_output(value: Any) -> bool | None:
    """``sam_labeling.sam.multimask_output`` -> True, False, or None for ``auto``.

    YAML gives booleans for true/false; the strings "true"/"false"/"auto" are accepted too (the
    schema's rule for the parameter, checked here).
    """
    # Imported here: the schema imports this module (for its choices).
    from wsss_project.validation.schema import check_section

    check_section({"multimask_output": value}, _PARAM_PREFIX, partial=True)
    if isinstance(value, bool):
        return value
    return {"auto": None, "true": True, "false": False}[value.strip().lower()]


class SamSegmenter(PromptableSegmenter):
    """SAM with one image embedding per tile and one batched decoder call per prompt set.

    Args:
        model: a loaded SAM (see :func:`wsss_project.foundation.sam.load_sam`).
        device: where prompts and embeddings are placed (the model's device).
        params: ``sam_labeling.sam``; uses ``multimask_output``: ``auto`` (SAM's single mask for
            prompt sets with boxes, best of 3 by predicted IoU for point-only ones), ``true``
            (always best of 3) or ``false`` (always the single mask), and
            ``stability_score_offset`` (the logit offset of the stability score).

    Scores are SAM's predicted IoU of the returned mask.
    """

    name = "sam"
    confidences = SAM_CONFIDENCES
    default_confidence = STABILITY_SCORE

    def __init__(self, model: Sam, device: torch.device | str, params: dict[str, Any]) -> None:
        missing = [key for key in ("multimask_output", "stability_score_offset") if key not in params]
        if missing:
            raise KeyError(f"missing parameter `{_PARAM_PREFIX}.{missing[0]}`")
        # None = auto: decided per prompt set in `segment`.
        self.multimask_output: bool | None = parse_multimask_output(params["multimask_output"])
        self.stability_score_offset = float(params["stability_score_offset"])
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.predictor = SamPredictor(self.model)

    @torch.inference_mode()
    def embed(self, image: np.ndarray) -> ImageState:
        """SAM image embedding of an RGB uint8 ``(H, W, 3)`` image."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}"
            )
        # set_image resizes (ResizeLongestSide), reorders channels for a BGR model, normalises and
        # pads as SAM expects (embeddings equal to the bit to the former hand-written encoding on
        # vit_b and the tests' tiny SAM, so cached embeddings stay valid).
        predictor = self.predictor
        predictor.set_image(image, image_format="RGB")
        state = ImageState(
            arrays={
                "embedding": predictor.get_image_embedding().float().cpu().numpy(),
                "original_size": np.asarray(predictor.original_size, dtype=np.int64),
                "input_size": np.asarray(predictor.input_size, dtype=np.int64),
            },
            image_shape=tuple(image.shape),
        )
        predictor.reset_image()
        return state

    def _set_state(self, state: ImageState) -> None:
        """Point the predictor at a (possibly cached) embedding instead of re-encoding."""
        predictor = self.predictor
        predictor.reset_image()
        dtype = next(self.model.mask_decoder.parameters()).dtype
        predictor.features = torch.as_tensor(state.arrays["embedding"], device=self.device).to(
            dtype
        )
        predictor.original_size = tuple(int(v) for v in state.arrays["original_size"])
        predictor.input_size = tuple(int(v) for v in state.arrays["input_size"])
        predictor.is_image_set = True

    def segment(
        self,
        state: ImageState,
        boxes: np.ndarray | None,
        points: np.ndarray | None,
        prior: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Segment K prompts in one batched call; ``prior`` is ignored by SAM."""
        result = self.segment_scored(state, boxes, points, prior)
        return result.masks, result.scores

    @torch.inference_mode()
    def segment_scored(
        self,
        state: ImageState,
        boxes: np.ndarray | None,
        points: np.ndarray | None,
        prior: np.ndarray | None = None,
    ) -> Segmentation:
        """:meth:`segment` with each mask's predicted IoU and stability score (module docstring)."""
        boxes, points, num_prompts = validate_prompts(boxes, points)
        height, width = state.height, state.width
        if num_prompts == 0:
            empty = np.zeros(0, dtype=np.float32)
            return Segmentation(np.zeros((0, height, width), dtype=bool), empty,
                                {name: empty for name in self.confidences})
        self._set_state(state)
        transform, original_size = self.predictor.transform, self.predictor.original_size

        coords_torch = labels_torch = boxes_torch = None
        if points is not None:
            has_point = ~np.isnan(points).any(axis=1)
            coords = torch.as_tensor(
                np.where(has_point[:, None], points, 0.0), dtype=torch.float, device=self.device
            )
            labels = np.where(has_point, _FOREGROUND_LABEL, _NOT_A_POINT_LABEL)
            coords_torch = transform.apply_coords_torch(coords, original_size)[:, None, :]
            labels_torch = torch.as_tensor(labels, dtype=torch.int, device=self.device)[:, None]
        if boxes is not None:
            boxes_torch = transform.apply_boxes_torch(
                torch.as_tensor(boxes, dtype=torch.float, device=self.device), original_size
            )

        logits, iou_predictions, _ = self.predictor.predict_torch(
            coords_torch,
            labels_torch,
            boxes_torch,
            multimask_output=self.uses_multimask(boxes is not None),
            return_logits=True,
        )
        # One column when multimask_output=False, so the argmax is that single mask.
        best = iou_predictions.argmax(dim=1)
        rows = torch.arange(num_prompts, device=best.device)
        chosen = logits[rows, best]
        masks = chosen > self.model.mask_threshold
        scores = iou_predictions[rows, best].float().cpu().numpy()
        # 0/0 (empty even at the lower cutoff) is NaN: no mask, no stability.
        stability = torch.nan_to_num(
            calculate_stability_score(chosen, self.model.mask_threshold, self.stability_score_offset), nan=0.0
        )
        self.predictor.reset_image()
        return Segmentation(
            masks.cpu().numpy(), scores,
            {PREDICTED_IOU: scores.copy(), STABILITY_SCORE: stability.float().cpu().numpy()},
        )

    def uses_multimask(self, has_boxes: bool) -> bool:
        """Whether a prompt set takes SAM's three masks (best by IoU) or its single mask."""
        if self.multimask_output is None:
            # A box disambiguates the object; only point-only prompts are ambiguous clicks.
            return not has_boxes
        return self.multimask_output
