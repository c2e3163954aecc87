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
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import Sam

from .base import ImageState, PromptableSegmenter, validate_prompts

_PARAM_PREFIX = "sam_labeling.sam"
_FOREGROUND_LABEL = 1
_NOT_A_POINT_LABEL = -1
MULTIMASK_CHOICES = ("auto", "true", "false")


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
            (always best of 3) or ``false`` (always the single mask).

    Scores are SAM's predicted IoU of the returned mask.
    """

    name = "sam"

    def __init__(self, model: Sam, device: torch.device | str, params: dict[str, Any]) -> None:
        try:
            setting = params["multimask_output"]
        except KeyError as err:
            raise KeyError(f"missing parameter `{_PARAM_PREFIX}.multimask_output`") from err
        # None = auto: decided per prompt set in `segment`.
        self.multimask_output: bool | None = parse_multimask_output(setting)
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

    @torch.inference_mode()
    def segment(
        self,
        state: ImageState,
        boxes: np.ndarray | None,
        points: np.ndarray | None,
        prior: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Segment K prompts in one batched call; ``prior`` is ignored by SAM."""
        boxes, points, num_prompts = validate_prompts(boxes, points)
        height, width = state.height, state.width
        if num_prompts == 0:
            return np.zeros((0, height, width), dtype=bool), np.zeros(0, dtype=np.float32)
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
        masks = logits[rows, best] > self.model.mask_threshold
        scores = iou_predictions[rows, best]
        self.predictor.reset_image()
        return masks.cpu().numpy(), scores.float().cpu().numpy()

    def uses_multimask(self, has_boxes: bool) -> bool:
        """Whether a prompt set takes SAM's three masks (best by IoU) or its single mask."""
        if self.multimask_output is None:
            # A box disambiguates the object; only point-only prompts are ambiguous clicks.
            return not has_boxes
        return self.multimask_output
