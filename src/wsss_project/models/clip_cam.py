"""The only state of `localization.method: clip`: the class text embeddings, and eq. 9 on patch tokens.

CLIP itself stays frozen and outside this module (foundation/clip.py loads it from
`text_prototype_kb.clip` when heatmaps are made): a saved `cam_model` is C x embed_dim floats,
not CLIP's hundreds of MB, and it cannot drift from the checkpoint the user points at.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# Guards the normalisation of an all-zero token or embedding.
_EPS = 1e-8


class ClipTextHead(nn.Module):
    """Per-class cosine between CLIP patch tokens and the enriched text embeddings T_c (eq. 9)."""

    def __init__(self, n_classes: int, embed_dim: int = 0) -> None:
        super().__init__()
        self.register_buffer("text_embeddings", torch.zeros(n_classes, embed_dim))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The embedding width is the CLIP's: an empty head takes it from the saved embeddings.
        saved = state_dict.get(f"{prefix}text_embeddings")
        if saved is not None and saved.shape[0] == self.text_embeddings.shape[0]:
            self.text_embeddings = torch.zeros_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        """(N, embed_dim, h, w) patch tokens -> (N, C, h, w) cosines in [-1, 1]."""
        tokens = F.normalize(patch_tokens, dim=1, eps=_EPS)
        texts = F.normalize(self.text_embeddings.to(tokens), dim=1, eps=_EPS)
        return torch.einsum("ndhw,cd->nchw", tokens, texts)
