"""Loading segment-anything (SAM) from a local checkpoint; never downloads anything."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import Sam

logger = logging.getLogger(__name__)


def load_sam(model_type: str, checkpoint: str | Path, device: torch.device | str) -> Sam:
    """Build SAM's ``model_type`` architecture, load ``checkpoint`` and move it to ``device``.

    The architecture comes from ``segment_anything.sam_model_registry[model_type]``; the weights
    are read with ``torch.load(..., map_location="cpu", weights_only=True)`` and loaded strictly
    (``sam_model_registry[...](checkpoint=path)`` does the same but without ``map_location``, so
    a checkpoint saved from CUDA would not load on a CPU-only machine).

    Args:
        model_type: one of ``sam_model_registry`` (``vit_b``, ``vit_l``, ``vit_h``, ``default``).
        checkpoint: path of a SAM state_dict (e.g. ``sam_vit_b_01ec64.pth``).
        device: where the model runs.

    Returns:
        The model in eval mode on ``device``.
    """
    if model_type not in sam_model_registry:
        raise ValueError(
            f"parameter `sam_labeling.sam.model_type` is {model_type!r}; "
            f"valid values: {sorted(sam_model_registry)}"
        )
    if checkpoint is None:
        raise ValueError("parameter `sam_labeling.sam.checkpoint` is not set (null)")
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"SAM checkpoint {str(path)!r} (parameter `sam_labeling.sam.checkpoint`) does not "
            "exist; download it yourself and point the parameter at it, or set it to null to "
            "use the weight-free GrabCut stand-in"
        )
    model = sam_model_registry[model_type](checkpoint=None)
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        raise RuntimeError(
            f"SAM checkpoint {str(path)!r} does not match `sam_labeling.sam.model_type` "
            f"{model_type!r}: {err}"
        ) from err
    logger.info("Loaded SAM %s from %s", model_type, path)
    return model.to(device).eval()
