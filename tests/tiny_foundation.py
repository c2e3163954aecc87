"""Tiny random-weight CLIP (open_clip) and DINOv2 (transformers) models, built from configs and saved
the ways users bring real ones, shared by the tests of foundation/ and of the pipelines using them.

    config_json, checkpoint = write_tiny_clip(tmp_path)   # text_prototype_kb.clip.{model_name, checkpoint}
    dino_dir = write_tiny_dino(tmp_path)                   # text_prototype_kb.dino.path
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import Dinov2Config, Dinov2Model

from wsss_project.foundation.clip import build_clip

CLIP_IMAGE_SIZE = 64
CLIP_PATCH = 16
CLIP_WIDTH = 64
CLIP_HEAD_WIDTH = 32  # two heads
CLIP_LAYERS = 2
CLIP_EMBED_DIM = 32
CLIP_CONTEXT = 40  # token positions: the shipped descriptions need at most 33

DINO_IMAGE_SIZE = 56
DINO_PATCH = 14
DINO_HIDDEN = 32
DINO_LAYERS = 2


def tiny_clip_config(quick_gelu: bool = False) -> dict[str, Any]:
    """An open_clip model config: a ViT image tower of width 64, 2 blocks, patch 16 on 64 px; the default tokenizer's vocabulary."""
    return {
        "embed_dim": CLIP_EMBED_DIM,
        "quick_gelu": quick_gelu,
        "vision_cfg": {
            "image_size": CLIP_IMAGE_SIZE,
            "layers": CLIP_LAYERS,
            "width": CLIP_WIDTH,
            "head_width": CLIP_HEAD_WIDTH,
            "patch_size": CLIP_PATCH,
        },
        "text_cfg": {"context_length": CLIP_CONTEXT, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }


def build_tiny_clip(seed: int = 0) -> torch.nn.Module:
    """The tiny CLIP with random weights (seeded), eval mode."""
    torch.manual_seed(seed)
    model = build_clip(tiny_clip_config())
    # open_clip leaves some parameters (e.g. layer norms) at exact identity; perturb every tensor so
    # a loader that skipped any of them would give different outputs.
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    return model.eval()


def write_tiny_clip(directory: Path, seed: int = 0, wrap: bool = False) -> tuple[Path, Path]:
    """Save the tiny CLIP's config JSON and weights in `directory`; returns (config_json, checkpoint).

    wrap=True saves an open_clip training checkpoint ({"epoch", "state_dict"} with `module.` keys)
    instead of a plain state_dict.
    """
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "tiny-clip.json"
    config_path.write_text(json.dumps(tiny_clip_config()))
    state = build_tiny_clip(seed).state_dict()
    checkpoint = directory / ("tiny_clip_openclip.pt" if wrap else "tiny_clip.pt")
    if wrap:
        torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in state.items()}}, checkpoint)
    else:
        torch.save(state, checkpoint)
    return config_path, checkpoint


def tiny_dino_config() -> Dinov2Config:
    """A DINOv2 of hidden size 32, 2 layers, patch 14 on 56 px."""
    return Dinov2Config(
        hidden_size=DINO_HIDDEN,
        num_hidden_layers=DINO_LAYERS,
        num_attention_heads=2,
        intermediate_size=2 * DINO_HIDDEN,
        patch_size=DINO_PATCH,
        image_size=DINO_IMAGE_SIZE,
    )


def build_tiny_dino(seed: int = 0) -> Dinov2Model:
    """The tiny DINOv2 with random weights (seeded), eager attention, eval mode."""
    torch.manual_seed(seed)
    config = tiny_dino_config()
    config._attn_implementation = "eager"
    return Dinov2Model(config).eval()


def write_tiny_dino(directory: Path, seed: int = 0) -> Path:
    """Save the tiny DINOv2 with `save_pretrained` in `directory/tiny_dinov2`; returns that directory."""
    target = directory / "tiny_dinov2"
    build_tiny_dino(seed).save_pretrained(target)
    return target
