"""A tiny random-weight SAM built from segment_anything's own modules, shared by the SAM tests."""

from __future__ import annotations

from functools import partial

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

IMG_SIZE = 128  # SAM input side (ResizeLongestSide target)
PATCH = 16
EMBED_DIM = 32
TINY_MODEL_TYPE = "tiny"  # the sam_labeling.sam.model_type that register_tiny_sam adds


def build_tiny_sam(seed: int = 0) -> Sam:
    """SAM's architecture, tiny: 2 ViT blocks of width 32, one decoder block."""
    torch.manual_seed(seed)
    grid = IMG_SIZE // PATCH
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=IMG_SIZE,
            patch_size=PATCH,
            embed_dim=EMBED_DIM,
            depth=2,
            num_heads=2,
            mlp_ratio=2.0,
            out_chans=EMBED_DIM,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=4,
            global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=EMBED_DIM,
            image_embedding_size=(grid, grid),
            input_image_size=(IMG_SIZE, IMG_SIZE),
            mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=1, embedding_dim=EMBED_DIM, mlp_dim=64, num_heads=2
            ),
            transformer_dim=EMBED_DIM,
            iou_head_depth=2,
            iou_head_hidden_dim=32,
        ),
    )
    return sam.eval()


def register_tiny_sam(monkeypatch) -> str:
    """Add the tiny SAM to segment_anything's registry for one test, as a `model_type` the schema
    and `load_sam` accept; returns that model type."""
    monkeypatch.setitem(sam_model_registry, TINY_MODEL_TYPE, lambda checkpoint=None: build_tiny_sam())
    return TINY_MODEL_TYPE
