"""segment-anything (SAM) behind the promptable-segmenter interface.

``embed`` runs SAM's image encoder once (ResizeLongestSide, SAM's own normalisation and padding);
``segment`` answers all K prompts of a tile in one batched ``SamPredictor.predict_torch`` call
from that embedding, keeping the best of SAM's three multimask outputs by predicted IoU.
A prompt whose point is NaN in point+box mode gets a padding point with label -1 ("not a point",
as SAM's prompt encoder pads point-only prompts), so the batch stays one call.
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


class SamSegmenter(PromptableSegmenter):
    """SAM with one image embedding per tile and one batched decoder call per prompt set.

    Args:
        model: a loaded SAM (see :func:`wsss_project.foundation.sam.load_sam`).
        device: where prompts and embeddings are placed (the model's device).
        params: ``sam_labeling.sam``; uses ``multimask_output`` (true: keep the best of 3 masks
            by predicted IoU, as for ambiguous single prompts; false: SAM's single mask).

    Scores are SAM's predicted IoU of the returned mask.
    """

    name = "sam"

    def __init__(self, model: Sam, device: torch.device | str, params: dict[str, Any]) -> None:
        try:
            self.multimask_output = bool(params["multimask_output"])
        except KeyError as err:
            raise KeyError(f"missing parameter `{_PARAM_PREFIX}.multimask_output`") from err
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
        if self.model.image_format != "RGB":
            image = image[..., ::-1]
        resized = self.predictor.transform.apply_image(image)
        tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1)[None].float()
        features = self.model.image_encoder(self.model.preprocess(tensor))
        return ImageState(
            arrays={
                "embedding": features.float().cpu().numpy(),
                "original_size": np.asarray(image.shape[:2], dtype=np.int64),
                "input_size": np.asarray(resized.shape[:2], dtype=np.int64),
            },
            image_shape=tuple(image.shape),
        )

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
            multimask_output=self.multimask_output,
            return_logits=True,
        )
        best = iou_predictions.argmax(dim=1)
        rows = torch.arange(num_prompts, device=best.device)
        masks = logits[rows, best] > self.model.mask_threshold
        scores = iou_predictions[rows, best]
        self.predictor.reset_image()
        return masks.cpu().numpy(), scores.float().cpu().numpy()
