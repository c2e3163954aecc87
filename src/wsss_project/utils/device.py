"""Device selection: `auto` means CUDA when present, else CPU."""

from __future__ import annotations

import logging

import torch

from wsss_project.errors import UserInputError

logger = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    """Turn a `device` parameter (auto | cpu | cuda | cuda:N) into a torch.device."""
    if name in (None, "auto"):
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError as err:
            raise UserInputError(f"parameter `device`: {name!r} is not a torch device") from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserInputError(f"parameter `device` is {name!r} but CUDA is not available here")
    logger.info("Using device %s", device)
    return device
