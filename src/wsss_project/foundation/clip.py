"""Loading a frozen open_clip CLIP from a local checkpoint, and reading its text and dense image features.

Model code apart from its use (as foundation/sam.py): this module builds the architecture, loads
the weights (never downloads: open_clip's `pretrained` tags are not used) and exposes

- `encode_texts`: L2-normalised text embeddings in the joint image-text space (eq. 1);
- `clip_image_features`: per tile, the patch tokens mapped into the joint space (eq. 9's F),
  every block's patch tokens (eq. 5's F_init^l) and every block's patch-to-patch attention
  (eq. 12's A_s^l), each only when asked for.

The image tower is run block by block here (open_clip is not patched): the attention weights, which
open_clip's `nn.MultiheadAttention` call does not return, are recomputed from the block's `ln_1`
output and its `in_proj` weights.
"""

from __future__ import annotations

import json
import logging
import math
import time
import zipfile
from collections.abc import Callable, Sequence
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from open_clip import get_model_config
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import CLIP, CustomTextCLIP
from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH, SimpleTokenizer
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

from wsss_project.errors import UserInputError
from wsss_project.foundation.state_dicts import first_keys, state_dict_problems

logger = logging.getLogger(__name__)

MODEL_NAME_PARAM = "text_prototype_kb.clip.model_name"
CHECKPOINT_PARAM = "text_prototype_kb.clip.checkpoint"
# How patch tokens reach the joint image-text space (see `clip_image_features`).
DENSE_PATH_FINAL = "final"
DENSE_PATH_VALUE = "value"
DENSE_PATHS = (DENSE_PATH_FINAL, DENSE_PATH_VALUE)
# Keys of an open_clip model config that need code or downloads this loader does not support.
_UNSUPPORTED_CONFIG_KEYS = {
    "vision_cfg": ("timm_model_name",),
    "text_cfg": ("hf_model_name", "hf_tokenizer_name"),
    "": ("multimodal_cfg",),
}
_CHECKPOINT_WRAPPER_KEY = "state_dict"  # open_clip's training checkpoints: {"epoch", "state_dict", ...}
_DATA_PARALLEL_PREFIX = "module."
_UINT8_MAX = float(np.iinfo(np.uint8).max)


@dataclass(frozen=True)
class ClipBundle:
    """A frozen CLIP and what its users need to feed it."""

    model: CLIP
    tokenizer: Callable[[list[str]], torch.Tensor]
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    patch_size: int
    image_size: int  # the side the positional embedding was trained for
    width: int  # the vision transformer's width (channels of block_outputs)
    embed_dim: int  # the joint image-text space
    n_layers: int  # vision transformer blocks
    device: torch.device


@dataclass(frozen=True)
class ClipImageFeatures:
    """Dense CLIP features of N tiles on a (h, w) patch grid; a field is None unless asked for."""

    patch_tokens: torch.Tensor | None  # (N, embed_dim, h, w), joint space, not normalised
    block_outputs: list[torch.Tensor] | None  # per block (N, width, h, w), class token removed
    attentions: list[torch.Tensor] | None  # per block (N, hw, hw), head-averaged, rows sum to 1
    grid: tuple[int, int]


# ---------------------------------------------------------------- architecture and weights


def clip_model_config(model_name: str) -> dict[str, Any]:
    """The open_clip model config of `model_name`: a registered name (`ViT-B-16`) or a JSON file path.

    A JSON file holds what open_clip's `model_configs/*.json` hold (`embed_dim`, `vision_cfg`,
    `text_cfg`, optionally `quick_gelu`, `custom_text`, `preprocess_cfg`), so a user with a custom
    remote-sensing CLIP can describe its architecture without registering it in open_clip.
    """
    if not isinstance(model_name, str) or not model_name:
        raise UserInputError(f"parameter `{MODEL_NAME_PARAM}` must be an open_clip model name or a JSON path")
    path = Path(model_name).expanduser()
    if path.suffix.lower() == ".json" or path.is_file():
        if not path.is_file():
            raise UserInputError(f"open_clip model config {str(path)!r} (parameter `{MODEL_NAME_PARAM}`) does not exist")
        try:
            config = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UserInputError(
                f"open_clip model config {path} (parameter `{MODEL_NAME_PARAM}`) is not readable JSON: {err}"
            ) from err
    else:
        config = get_model_config(model_name)
        if config is None:
            raise UserInputError(
                f"parameter `{MODEL_NAME_PARAM}`: {model_name!r} is neither an open_clip model name "
                "(open_clip.list_models(), e.g. ViT-B-16, ViT-B-16-quickgelu for OpenAI's weights) "
                "nor a path to a model-config JSON file"
            )
    _check_config(config, model_name)
    return config


def _check_config(config: Any, model_name: str) -> None:
    if not isinstance(config, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(config):
        raise UserInputError(
            f"`{MODEL_NAME_PARAM}` {model_name!r}: an open_clip model config needs embed_dim, vision_cfg and text_cfg"
        )
    for section, keys in _UNSUPPORTED_CONFIG_KEYS.items():
        holder = config.get(section, {}) if section else config
        found = [k for k in keys if k in holder]
        if found:
            raise UserInputError(
                f"`{MODEL_NAME_PARAM}` {model_name!r} uses {found} (timm / Hugging Face towers or CoCa), "
                "which this loader does not support: it needs open_clip's own ViT image tower and text transformer"
            )
    if not isinstance(config["vision_cfg"].get("layers"), int):
        raise UserInputError(
            f"`{MODEL_NAME_PARAM}` {model_name!r} has a ResNet image tower; dense features need a ViT (layers: int)"
        )


def build_clip(config: dict[str, Any]) -> CLIP:
    """open_clip's CLIP (or CustomTextCLIP) for `config`, random weights, fp32."""
    config = deepcopy(config)
    custom_text = config.pop("custom_text", False)
    config.pop("preprocess_cfg", None)
    model_class = CustomTextCLIP if custom_text else CLIP
    return model_class(**config)


def _checkpoint_path(checkpoint: str | Path | None) -> Path:
    if checkpoint is None:
        raise UserInputError(
            f"parameter `{CHECKPOINT_PARAM}` is not set (null): point it at a CLIP state_dict file "
            "(e.g. OpenAI ViT-B/16 converted to open_clip, RemoteCLIP or GeoRSCLIP); nothing is downloaded"
        )
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise UserInputError(f"CLIP checkpoint {str(path)!r} (parameter `{CHECKPOINT_PARAM}`) does not exist")
    return path


def read_clip_state_dict(path: Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a CLIP checkpoint on the CPU (weights only: no code in the file runs).

    Accepts `torch.save(model.state_dict())` files and open_clip training checkpoints
    (`{"state_dict": ...}`, keys maybe prefixed `module.` by DataParallel/DDP).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError... for a bad file
        raise UserInputError(
            f"file {path} is not a readable CLIP checkpoint (parameter `{CHECKPOINT_PARAM}`): torch.load failed "
            f"with {type(err).__name__}. OpenAI's original .pt files are TorchScript archives: convert one with "
            "`torch.save(torch.jit.load(path, map_location='cpu').state_dict(), out)`"
        ) from err
    if isinstance(state, dict) and isinstance(state.get(_CHECKPOINT_WRAPPER_KEY), dict):
        state = state[_CHECKPOINT_WRAPPER_KEY]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserInputError(
            f"file {path} is not a readable CLIP checkpoint (parameter `{CHECKPOINT_PARAM}`): it holds no state_dict of tensors"
        )
    if state and all(k.startswith(_DATA_PARALLEL_PREFIX) for k in state):
        state = {k[len(_DATA_PARALLEL_PREFIX):]: v for k, v in state.items()}
    return state


def _check_state_dict(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: Path, model_name: str
) -> None:
    """Fail, naming file and parameters, unless `state` has exactly the tensors (names, shapes) of `expected`."""
    missing = [k for k in expected if k not in state]
    if len(missing) == len(expected):
        raise UserInputError(
            f"CLIP checkpoint {path} (parameter `{CHECKPOINT_PARAM}`) matches none of the "
            f"{len(expected)} tensors of `{MODEL_NAME_PARAM}` {model_name!r} (file has e.g. {first_keys(list(state))})"
        )
    problems = state_dict_problems(state, expected)
    if problems:
        raise UserInputError(
            f"CLIP checkpoint {path} (parameter `{CHECKPOINT_PARAM}`) does not hold a "
            f"`{MODEL_NAME_PARAM}: {model_name}`: " + "; ".join(problems)
        )


def check_clip_checkpoint(model_name: str, checkpoint: str | Path | None) -> None:
    """The cheap pre-run check: the file is memory-mapped and compared with the architecture on the meta device."""
    config = clip_model_config(model_name)
    path = _checkpoint_path(checkpoint)
    state = read_clip_state_dict(path, mmap=True)
    with torch.device("meta"):  # names and shapes, without memory for weights
        expected = build_clip(config).state_dict()
    _check_state_dict(state, expected, path, model_name)


def load_clip(model_name: str, checkpoint: str | Path | None, device: torch.device | str) -> ClipBundle:
    """Build `model_name`'s architecture, load `checkpoint` strictly and freeze it on `device`.

    Args:
        model_name: an open_clip registered name (`ViT-B-16`; `ViT-B-16-quickgelu` for OpenAI's
            weights, trained with QuickGELU) or a path to an open_clip model-config JSON file.
        checkpoint: a file holding the model's state_dict (`torch.save(model.state_dict())`) or an
            open_clip checkpoint (`{"state_dict": ...}`, maybe `module.`-prefixed).
        device: where the model runs.

    Returns:
        The frozen model (eval, requires_grad False) with its tokenizer and input statistics.
    """
    config = clip_model_config(model_name)
    path = _checkpoint_path(checkpoint)
    model = build_clip(config)
    state = read_clip_state_dict(path)
    _check_state_dict(state, model.state_dict(), path, model_name)
    model.load_state_dict(state, strict=True)
    model = model.to(device).eval().requires_grad_(False)
    visual = model.visual
    if not isinstance(visual, VisionTransformer):
        raise UserInputError(f"`{MODEL_NAME_PARAM}` {model_name!r}: dense features need open_clip's VisionTransformer")
    text_cfg = config["text_cfg"]
    preprocess = config.get("preprocess_cfg", {})
    logger.info("Loaded CLIP %s from %s", model_name, path)
    return ClipBundle(
        model=model,
        tokenizer=SimpleTokenizer(
            context_length=text_cfg.get("context_length", DEFAULT_CONTEXT_LENGTH),
            **text_cfg.get("tokenizer_kwargs", {}),
        ),
        image_mean=tuple(preprocess.get("mean", OPENAI_DATASET_MEAN)),
        image_std=tuple(preprocess.get("std", OPENAI_DATASET_STD)),
        patch_size=visual.patch_size[0],
        image_size=visual.image_size[0],
        width=visual.transformer.width,
        embed_dim=config["embed_dim"],
        n_layers=visual.transformer.layers,
        device=torch.device(device),
    )


# ---------------------------------------------------------------- text


@torch.inference_mode()
def encode_texts(bundle: ClipBundle, texts: Sequence[str], batch_size: int) -> torch.Tensor:
    """CLIP text embeddings of `texts`: (n, embed_dim), L2-normalised, CPU float32."""
    if batch_size < 1:
        raise UserInputError("parameter `text_prototype_kb.clip.text_batch_size` must be >= 1")
    chunks = []
    for start in range(0, len(texts), batch_size):
        tokens = bundle.tokenizer(list(texts[start:start + batch_size])).to(bundle.device)
        chunks.append(bundle.model.encode_text(tokens, normalize=True).float().cpu())
    if not chunks:
        return torch.zeros((0, bundle.embed_dim), dtype=torch.float32)
    return torch.cat(chunks)


# ---------------------------------------------------------------- images


def preprocess_images(
    images: np.ndarray, side: int, mean: Sequence[float], std: Sequence[float], device: torch.device
) -> torch.Tensor:
    """uint8 (N, H, W, 3) tiles -> normalised float (N, 3, side, side) on `device` (bilinear, antialiased)."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, H, W, 3); got {images.dtype} {images.shape}")
    pixels = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / _UINT8_MAX
    if pixels.shape[-2:] != (side, side):
        pixels = F.interpolate(pixels, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    mean_t = torch.tensor(mean, device=device, dtype=pixels.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device, dtype=pixels.dtype).view(1, 3, 1, 1)
    return (pixels - mean_t) / std_t


def _positional_embedding(visual: VisionTransformer, grid: tuple[int, int]) -> torch.Tensor:
    """The (1 + h*w, width) positional embedding, bicubically resized when the grid differs from training's."""
    pos = visual.positional_embedding
    trained = tuple(visual.grid_size)
    if grid == trained:
        return pos
    cls_pos, patch_pos = pos[:1], pos[1:]
    patch_pos = patch_pos.reshape(1, *trained, -1).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", align_corners=False)
    return torch.cat([cls_pos, patch_pos.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)])


def _tokens_in(visual: VisionTransformer, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """The token sequence entering the first block (N, 1 + hw, width), batch first, as open_clip's `_embeds`."""
    x = visual.conv1(pixels)
    grid = (x.shape[-2], x.shape[-1])
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + _positional_embedding(visual, grid).to(x.dtype)
    return visual.ln_pre(visual.patch_dropout(x)), grid


def _qkv(block: ResidualAttentionBlock, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query, key, value (N, L, width) of the block's attention, from its ln_1 output and in_proj."""
    attn = block.attn
    return F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)


def patch_attention(block: ResidualAttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """Head-averaged patch-to-patch attention (N, hw, hw) of `block` on its input `x` (N, 1 + hw, width).

    softmax(q k^T / sqrt(d_head)) per head as nn.MultiheadAttention computes it, averaged over heads;
    the class token's row and column are then dropped and each row renormalised to sum to 1, so
    A_s^l is a patch-to-patch transition matrix (eq. 12, 14).
    """
    q, k, _ = _qkv(block, x)
    n, length, width = q.shape
    heads = block.attn.num_heads
    q = q.view(n, length, heads, width // heads).transpose(1, 2)
    k = k.view(n, length, heads, width // heads).transpose(1, 2)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(width // heads), dim=-1).mean(dim=1)
    patches = weights[:, 1:, 1:]
    return patches / patches.sum(dim=-1, keepdim=True)


def _value_path(block: ResidualAttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """MaskCLIP's dense path through the last block: out_proj(v), without query-key mixing, residual or MLP."""
    _, _, v = _qkv(block, x)
    return block.ls_1(block.attn.out_proj(v))


def _joint_space(visual: VisionTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Patch tokens (N, hw, width) -> the joint image-text space (N, hw, embed_dim): ln_post then proj."""
    tokens = visual.ln_post(tokens)
    return tokens @ visual.proj if visual.proj is not None else tokens


def _grid_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(N, hw, C) -> (N, C, h, w) float32 on the CPU."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid).float().cpu()


def _check_blocks(visual: VisionTransformer) -> None:
    if not all(isinstance(b, ResidualAttentionBlock) for b in visual.transformer.resblocks):
        raise UserInputError(
            f"`{MODEL_NAME_PARAM}`: attentions and the value path need open_clip's standard "
            "ResidualAttentionBlock (nn.MultiheadAttention), not its custom block"
        )


@torch.inference_mode()
def _image_batch(
    bundle: ClipBundle,
    pixels: torch.Tensor,
    with_patch_tokens: bool,
    with_block_outputs: bool,
    with_attentions: bool,
    dense_path: str,
) -> tuple[torch.Tensor | None, list[torch.Tensor], list[torch.Tensor], tuple[int, int]]:
    visual = bundle.model.visual
    x, grid = _tokens_in(visual, pixels)
    batch_first = visual.transformer.batch_first
    blocks = visual.transformer.resblocks
    block_outputs, attentions = [], []
    patch_tokens = None
    for index, block in enumerate(blocks):
        if with_attentions:
            attentions.append(patch_attention(block, x).float().cpu())
        if index == len(blocks) - 1 and with_patch_tokens and dense_path == DENSE_PATH_VALUE:
            patch_tokens = _grid_map(_joint_space(visual, _value_path(block, x)[:, 1:]), grid)
        x = block(x) if batch_first else block(x.transpose(0, 1)).transpose(0, 1)
        if with_block_outputs:
            block_outputs.append(_grid_map(x[:, 1:], grid))
    if with_patch_tokens and patch_tokens is None:
        patch_tokens = _grid_map(_joint_space(visual, x[:, 1:]), grid)
    return patch_tokens, block_outputs, attentions, grid


def clip_image_features(
    bundle: ClipBundle,
    images: np.ndarray,
    batch_size: int,
    image_size: int | None = None,
    with_patch_tokens: bool = True,
    with_block_outputs: bool = False,
    with_attentions: bool = False,
    dense_path: str = DENSE_PATH_FINAL,
) -> ClipImageFeatures:
    """Dense CLIP features of uint8 tiles (N, H, W, 3), each resized to `image_size` (default: the model's).

    Args:
        batch_size: tiles per forward pass.
        image_size: the side tiles are resized to (a multiple of the patch size); the positional
            embedding is bicubically resized when it differs from the model's (the paper uses 320).
        with_patch_tokens: patch tokens in the joint image-text space (eq. 9's F).
        with_block_outputs: every block's output tokens (eq. 5's F_init^l).
        with_attentions: every block's head-averaged patch-to-patch attention (eq. 12's A_s^l),
            hw x hw per block and tile: ask only when needed.
        dense_path: how patch tokens reach the joint space. `final`: the last block's output
            through ln_post and proj, as CLIP maps its class token (the paper's eq. 9). `value`:
            MaskCLIP's value path (Zhou et al., 2022) as ClearCLIP keeps it: the last block's
            attention output is replaced by out_proj(v), its residual and MLP dropped, then
            ln_post and proj; tokens then keep their own content instead of CLIP's global
            mixing, which localises better.

    Returns:
        CPU float32 features on the (image_size / patch_size) grid.
    """
    if dense_path not in DENSE_PATHS:
        raise ValueError(f"dense_path must be one of {DENSE_PATHS}; got {dense_path!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    side = bundle.image_size if image_size is None else image_size
    if side % bundle.patch_size:
        raise ValueError(f"image_size {side} is not a multiple of the CLIP patch size {bundle.patch_size}")
    if not len(images):
        raise ValueError("clip_image_features got no images")
    if with_attentions or dense_path == DENSE_PATH_VALUE:
        _check_blocks(bundle.model.visual)
    tokens, outputs, attentions = [], [], []
    grid = (side // bundle.patch_size, side // bundle.patch_size)
    started = time.perf_counter()
    for start in range(0, len(images), batch_size):
        pixels = preprocess_images(images[start:start + batch_size], side, bundle.image_mean, bundle.image_std,
                                   bundle.device)
        batch = _image_batch(bundle, pixels, with_patch_tokens, with_block_outputs, with_attentions, dense_path)
        tokens.append(batch[0])
        outputs.append(batch[1])
        attentions.append(batch[2])
        done = min(start + batch_size, len(images))
        logger.debug("CLIP features: %d/%d tiles, %.2f tiles/s", done, len(images),
                     done / max(time.perf_counter() - started, np.finfo(float).eps))
    seconds = time.perf_counter() - started
    logger.info("CLIP features of %d tiles in %.1f s (%.2f tiles/s)", len(images), seconds,
                len(images) / max(seconds, np.finfo(float).eps))
    n_blocks = bundle.n_layers
    return ClipImageFeatures(
        patch_tokens=torch.cat(tokens) if with_patch_tokens else None,
        block_outputs=[torch.cat([b[i] for b in outputs]) for i in range(n_blocks)] if with_block_outputs else None,
        attentions=[torch.cat([a[i] for a in attentions]) for i in range(n_blocks)] if with_attentions else None,
        grid=grid,
    )
