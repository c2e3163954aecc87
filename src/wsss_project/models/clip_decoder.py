"""The CLIP feature adapter and transformer decoder of seed 003 (§3.3, eq. 5-8): plain torch modules.

Input: the frozen CLIP image encoder's block outputs (class token removed, reshaped to maps), one
(N, width, h, w) tensor per chosen block (eq. 5's F_init^l). The CLIP model itself is not part of
this module (it is loaded, frozen, by foundation/clip.py and run by learning/clip_decoder_training.py),
so `state_dict()` holds the trainable adapter and decoder only.

- Adapter (eq. 5): per block, a two-layer MLP as two 1x1 convs, width -> adapter_dim -> adapter_dim,
  GELU between (the paper's point-wise nonlinearity sigma; GELU as in the ViT it adapts).
- Fusion (eq. 6): the adapted maps concatenated over blocks, a 1x1 conv to `decoder_dim` (d).
- Decoder (eq. 7): `depth` pre-norm transformer encoder blocks (ViT style: LayerNorm, multi-head
  self-attention, residual; LayerNorm, GELU MLP, residual) over the h*w tokens. No positional
  embedding: CLIP's features already carry position, so the decoder is equivariant to permutations of
  the token grid (a flip of the features flips its output).
- Head (eq. 8): LayerNorm, then a 1x1 conv to n_outputs = background + classes, bilinear upsampling
  to the tile size. Output: logits (N, n_outputs, H, W), as the ResUNet's.

The last decoder block also returns its head-averaged, pre-softmax attention scores (N, hw, hw), the
affinity that L_aff supervises (Ru et al. 2022, AFA: sigmoid of the symmetrised attention scores).

`backbone` records which frozen CLIP the weights were trained on (model name, checkpoint fingerprint,
blocks); it is saved in the state_dict as the module's extra state, so a prediction can refuse
features from another CLIP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class ClipDecoderOutput:
    """logits (N, n_outputs, H, W) at the requested size; attention_scores (N, hw, hw): the last decoder
    block's pre-softmax attention scores, averaged over heads; grid: the token grid (h, w)."""

    logits: torch.Tensor
    attention_scores: torch.Tensor
    grid: tuple[int, int]


class BlockAdapter(nn.Module):
    """Eq. 5: F_new = W1 sigma(W2 F_init), W1 and W2 1x1 convs (a per-location two-layer MLP)."""

    def __init__(self, in_dim: int, adapter_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(in_dim, adapter_dim, 1), nn.GELU(), nn.Conv2d(adapter_dim, adapter_dim, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class FeatureAdapter(nn.Module):
    """Eq. 5-6: one BlockAdapter per chosen CLIP block, concatenated, fused by a 1x1 conv to decoder_dim."""

    def __init__(self, in_dim: int, n_blocks: int, adapter_dim: int, decoder_dim: int) -> None:
        super().__init__()
        if n_blocks < 1:
            raise ValueError(f"the adapter needs at least one CLIP block, got {n_blocks}")
        self.blocks = nn.ModuleList(BlockAdapter(in_dim, adapter_dim) for _ in range(n_blocks))
        self.fuse = nn.Conv2d(n_blocks * adapter_dim, decoder_dim, 1)

    def forward(self, block_features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(block_features) != len(self.blocks):
            raise ValueError(f"the adapter was built for {len(self.blocks)} CLIP blocks, got {len(block_features)}")
        shapes = {tuple(f.shape[-2:]) for f in block_features}
        if len(shapes) != 1:
            raise ValueError(f"every CLIP block map must share one token grid, got {sorted(shapes)}")
        return self.fuse(torch.cat([adapter(f) for adapter, f in zip(self.blocks, block_features, strict=True)], 1))


class SelfAttention(nn.Module):
    """Multi-head self-attention that also returns its pre-softmax scores (N, heads, T, T).

    Written out (rather than nn.MultiheadAttention) because L_aff reads the scores before softmax.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"decoder_dim {dim} must be divisible by decoder_heads {heads}")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, t, dim = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) * self.scale
        out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(n, t, dim)
        return self.proj(out), scores


class DecoderBlock(nn.Module):
    """Pre-norm transformer encoder block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended, scores = self.attn(self.norm1(x))
        x = x + attended
        return x + self.mlp(self.norm2(x)), scores


class ClipDecoder(nn.Module):
    """Adapter (eq. 5-6), D transformer blocks (eq. 7), 1x1 conv to classes and bilinear upsampling (eq. 8).

    Args:
        in_dim: CLIP vision width (channels of each block map).
        n_blocks: how many CLIP blocks feed the adapter.
        n_outputs: background + classes.
        adapter_dim: channels of each block's adapted map.
        decoder_dim: d, the fused map's channels and the decoder's token width.
        depth: D, the number of transformer blocks.
        heads: attention heads per block.
        mlp_ratio: the blocks' MLP hidden width / decoder_dim.
        backbone: which frozen CLIP the features come from (saved as extra state; see module docstring).
    """

    def __init__(
        self, in_dim: int, n_blocks: int, n_outputs: int, adapter_dim: int, decoder_dim: int,
        depth: int, heads: int, mlp_ratio: float, backbone: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"the decoder needs at least one transformer block, got depth {depth}")
        self.n_outputs = n_outputs
        self.adapter = FeatureAdapter(in_dim, n_blocks, adapter_dim, decoder_dim)
        self.blocks = nn.ModuleList(DecoderBlock(decoder_dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(decoder_dim)
        self.head = nn.Conv2d(decoder_dim, n_outputs, 1)
        self.backbone: dict[str, Any] = dict(backbone or {})

    def forward(self, block_features: Sequence[torch.Tensor], size: tuple[int, int]) -> ClipDecoderOutput:
        """Logits upsampled (bilinear) to `size` = (H, W), and the last block's head-averaged scores."""
        fused = self.adapter(block_features)
        n, dim, h, w = fused.shape
        tokens = fused.flatten(2).transpose(1, 2)
        scores = fused.new_zeros(0)
        for block in self.blocks:
            tokens, scores = block(tokens)
        grid = self.norm(tokens).transpose(1, 2).reshape(n, dim, h, w)
        logits = F.interpolate(self.head(grid), size=size, mode="bilinear", align_corners=False)
        return ClipDecoderOutput(logits=logits, attention_scores=scores.mean(dim=1), grid=(h, w))

    def get_extra_state(self) -> dict[str, Any]:
        return dict(self.backbone)

    def set_extra_state(self, state: Any) -> None:
        self.backbone = dict(state)
