"""Loading a frozen DINOv2 (transformers format) from a local directory, and reading its patch tokens.

Model code apart from its use, as foundation/clip.py: `load_dino` reads a directory written by
`save_pretrained` (never the Hub: `local_files_only=True`), with eager attention so attention
weights can be returned; `dino_features` gives the last layer's patch tokens (F_init^dino of
§3.5.1) and, when asked, every layer's head-averaged patch-to-patch attention.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, PreTrainedModel
from transformers.utils.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from wsss_project.errors import UserInputError
from wsss_project.foundation.clip import preprocess_images

logger = logging.getLogger(__name__)

PATH_PARAM = "text_prototype_kb.dino.path"
_PREPROCESSOR_FILE = "preprocessor_config.json"  # what AutoImageProcessor.save_pretrained writes
_EAGER = "eager"  # the attention implementation that can return weights


@dataclass(frozen=True)
class DinoBundle:
    """A frozen DINOv2 and what its users need to feed it."""

    model: PreTrainedModel
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    patch_size: int
    image_size: int  # the side its positional embedding was trained for
    hidden_size: int
    n_layers: int
    n_prefix_tokens: int  # class token and register tokens, before the patch tokens
    device: torch.device


@dataclass(frozen=True)
class DinoFeatures:
    """DINOv2 features of N tiles on a (h, w) patch grid."""

    patch_tokens: torch.Tensor  # (N, hidden, h, w), last layer after the final layer norm
    attentions: list[torch.Tensor] | None  # per layer (N, hw, hw), head-averaged, rows sum to 1
    grid: tuple[int, int]


def _input_statistics(directory: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std from the directory's preprocessor config, else ImageNet's (DINOv2's training statistics)."""
    config_file = directory / _PREPROCESSOR_FILE
    if not config_file.is_file():
        return tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserInputError(f"{config_file} (parameter `{PATH_PARAM}`) is not readable JSON: {err}") from err
    return (tuple(config.get("image_mean", IMAGENET_DEFAULT_MEAN)),
            tuple(config.get("image_std", IMAGENET_DEFAULT_STD)))


def load_dino(path: str | Path | None, device: torch.device | str) -> DinoBundle:
    """Load the DINOv2 saved in directory `path` (transformers format), frozen, on `device`.

    Args:
        path: a directory `transformers.AutoModel.from_pretrained` loads (config.json and weights,
            e.g. written by `save_pretrained`, or a downloaded `facebook/dinov2-base` snapshot).
        device: where the model runs.
    """
    if path is None:
        raise UserInputError(
            f"parameter `{PATH_PARAM}` is not set (null): point it at a DINOv2 directory in transformers "
            "format (e.g. a local copy of facebook/dinov2-base); nothing is downloaded"
        )
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise UserInputError(f"DINOv2 directory {str(directory)!r} (parameter `{PATH_PARAM}`) does not exist")
    try:
        model = AutoModel.from_pretrained(directory, attn_implementation=_EAGER, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise UserInputError(
            f"DINOv2 directory {directory} (parameter `{PATH_PARAM}`) is not a transformers model "
            f"directory from_pretrained can load: {type(err).__name__}: {err}"
        ) from err
    config = model.config
    if not hasattr(config, "patch_size") or not hasattr(config, "num_hidden_layers"):
        raise UserInputError(
            f"the model in {directory} (parameter `{PATH_PARAM}`) is a {config.model_type!r}, not a ViT like DINOv2"
        )
    mean, std = _input_statistics(directory)
    logger.info("Loaded %s from %s", config.model_type, directory)
    return DinoBundle(
        model=model.to(device).eval().requires_grad_(False),
        image_mean=mean,
        image_std=std,
        patch_size=config.patch_size,
        image_size=config.image_size,
        hidden_size=config.hidden_size,
        n_layers=config.num_hidden_layers,
        n_prefix_tokens=1 + getattr(config, "num_register_tokens", 0),
        device=torch.device(device),
    )


def _patch_attention(weights: torch.Tensor, n_prefix: int) -> torch.Tensor:
    """(N, heads, L, L) attention -> head-averaged patch-to-patch (N, hw, hw), rows renormalised to 1."""
    patches = weights.mean(dim=1)[:, n_prefix:, n_prefix:]
    return patches / patches.sum(dim=-1, keepdim=True)


@torch.inference_mode()
def dino_features(
    bundle: DinoBundle,
    images: np.ndarray,
    batch_size: int,
    image_size: int | None = None,
    with_attentions: bool = False,
) -> DinoFeatures:
    """DINOv2 patch tokens of uint8 tiles (N, H, W, 3), each resized to `image_size` (default: the model's).

    Args:
        batch_size: tiles per forward pass.
        image_size: the side tiles are resized to, a multiple of the patch size (the paper uses
            308 = 22 x 14); DINOv2 interpolates its positional embedding itself.
        with_attentions: also every layer's head-averaged attention among patch tokens (class and
            register tokens dropped, rows renormalised), hw x hw per layer and tile.

    Returns:
        CPU float32 features; the class and register tokens are removed.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if not len(images):
        raise ValueError("dino_features got no images")
    side = bundle.image_size if image_size is None else image_size
    if side % bundle.patch_size:
        raise ValueError(f"image_size {side} is not a multiple of the DINOv2 patch size {bundle.patch_size}")
    grid = (side // bundle.patch_size, side // bundle.patch_size)
    tokens: list[torch.Tensor] = []
    attentions: list[Sequence[torch.Tensor]] = []
    started = time.perf_counter()
    for start in range(0, len(images), batch_size):
        pixels = preprocess_images(images[start:start + batch_size], side, bundle.image_mean, bundle.image_std,
                                   bundle.device)
        out = bundle.model(pixel_values=pixels, output_attentions=with_attentions)
        patches = out.last_hidden_state[:, bundle.n_prefix_tokens:]
        tokens.append(patches.transpose(1, 2).reshape(patches.shape[0], -1, *grid).float().cpu())
        if with_attentions:
            attentions.append([_patch_attention(a, bundle.n_prefix_tokens).float().cpu() for a in out.attentions])
        done = min(start + batch_size, len(images))
        logger.debug("DINOv2 features: %d/%d tiles, %.2f tiles/s", done, len(images),
                     done / max(time.perf_counter() - started, np.finfo(float).eps))
    seconds = time.perf_counter() - started
    logger.info("DINOv2 features of %d tiles in %.1f s (%.2f tiles/s)", len(images), seconds,
                len(images) / max(seconds, np.finfo(float).eps))
    return DinoFeatures(
        patch_tokens=torch.cat(tokens),
        attentions=[torch.cat([a[i] for a in attentions]) for i in range(bundle.n_layers)] if with_attentions else None,
        grid=grid,
    )
