"""Loading segment-anything (SAM) from a local checkpoint; never downloads anything.

`check_sam_checkpoint` is the cheap pre-run check (the file is memory-mapped and its tensor names
and shapes compared with the architecture built on the meta device, no weights allocated);
`load_sam` loads it for real. Both report a bad file the same way, naming the file and parameter.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import Sam

from wsss_project.errors import UserInputError
from wsss_project.foundation.state_dicts import state_dict_problems

logger = logging.getLogger(__name__)

CHECKPOINT_PARAM = "sam_labeling.sam.checkpoint"
MODEL_TYPE_PARAM = "sam_labeling.sam.model_type"


def _checkpoint_path(model_type: str, checkpoint: str | Path | None) -> Path:
    """The checkpoint's path, once the model type is known and the file exists."""
    # Imported here: the schema's rule for the model type (sam_model_registry's names); it imports the segmenters.
    from wsss_project.validation.schema import check_section

    check_section({"model_type": model_type}, "sam_labeling.sam", partial=True)
    if checkpoint is None:
        raise UserInputError(f"parameter `{CHECKPOINT_PARAM}` is not set (null)")
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise UserInputError(
            f"SAM checkpoint {str(path)!r} (parameter `{CHECKPOINT_PARAM}`) does not "
            "exist; download it yourself and point the parameter at it, or set it to null to "
            "use the weight-free GrabCut stand-in"
        )
    return path


def read_sam_state_dict(path: Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a SAM checkpoint on the CPU (weights only: no code in the file runs).

    mmap maps a zip-format file instead of reading it (the pre-run check); a file torch cannot
    read as tensors is reported as not a readable SAM checkpoint, naming the file and parameter.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError... for a bad file
        raise UserInputError(
            f"file {path} is not a readable SAM checkpoint (parameter `{CHECKPOINT_PARAM}`): torch.load "
            f"failed with {type(err).__name__}; is it complete and a segment-anything .pth file?"
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserInputError(
            f"file {path} is not a readable SAM checkpoint (parameter `{CHECKPOINT_PARAM}`): it holds no "
            "state_dict of tensors"
        )
    return state


def check_sam_checkpoint(model_type: str, checkpoint: str | Path | None) -> None:
    """Fail, naming the file and parameter, unless `checkpoint` holds SAM's `model_type` weights."""
    path = _checkpoint_path(model_type, checkpoint)
    state = read_sam_state_dict(path, mmap=True)
    with torch.device("meta"):  # the architecture's names and shapes, without memory for weights
        expected = sam_model_registry[model_type](checkpoint=None).state_dict()
    problems = state_dict_problems(state, expected)
    if problems:
        raise UserInputError(
            f"SAM checkpoint {path} (parameter `{CHECKPOINT_PARAM}`) does not hold a SAM "
            f"`{MODEL_TYPE_PARAM}: {model_type}`: " + "; ".join(problems)
        )


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
    path = _checkpoint_path(model_type, checkpoint)
    model = sam_model_registry[model_type](checkpoint=None)
    state_dict = read_sam_state_dict(path)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        raise UserInputError(
            f"SAM checkpoint {str(path)!r} does not match `{MODEL_TYPE_PARAM}` {model_type!r}: {err}"
        ) from err
    logger.info("Loaded SAM %s from %s", model_type, path)
    return model.to(device).eval()
