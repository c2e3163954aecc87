"""A fully convolutional pixel scorer trained as multiple-instance learning (MIL) on tile labels.

Every pixel gets a logit per class from a small stack of 3x3 convolutions (no striding, no
dilation), so its receptive field is only ``1 + 2 * n_layers`` pixels (9 px with four layers).
A tile's logit is pooled from its pixel logits: the mean of the top-k % (``topk``) or a
log-sum-exp with sharpness r (``lse``). Trained with BCE on image-level labels, a positive tile
must hold *some* pixels that score high and a negative tile *none*, so the pixel logits themselves
localize: the heatmap is sigmoid(pixel logit) x 255 at full tile resolution (128 = p 0.5).

Why so small a receptive field: with context the classifier can recognise a *scene* that tends
to hold landslides (a valley, a sensor's colour cast) and fire everywhere in it; a 9-px
receptive field can only learn what a landslide pixel and its immediate texture look like
(CALIBRATION.md, lessons 10-11: a dilated 31-px variant localized worse).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from wsss_project.errors import UserInputError
from wsss_project.models.pixel_relation import PixelRelation, RelationSpec

POOLINGS = ("topk", "lse")


class PixelMIL(nn.Module):
    """Pixel scorer: ``n_layers`` x (3x3 conv, BN, ReLU) then a 1x1 conv to one logit per class.

    Args:
        n_classes: number of image-level (multi-label) classes.
        width: channels of every hidden layer.
        n_layers: number of 3x3 layers; the receptive field is ``1 + 2 * n_layers`` pixels.
        relation: settings of a PRC module (models/pixel_relation.py) on the hidden features;
            then the output pixel logits are the refined ones, A . raw logits. None: no module.
    """

    def __init__(
        self, n_classes: int, width: int = 32, n_layers: int = 4, relation: RelationSpec | None = None
    ) -> None:
        super().__init__()
        if n_layers < 1 or width < 1 or n_classes < 1:
            raise ValueError(
                f"PixelMIL needs n_layers, width and n_classes >= 1, got {n_layers}, {width}, {n_classes}"
            )
        layers: list[nn.Module] = []
        in_ch = 3
        for _ in range(n_layers):
            # Reflect padding: a zero border is a texture no scene has, and the scorer would learn it.
            layers += [
                nn.Conv2d(in_ch, width, 3, padding=1, padding_mode="reflect", bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            in_ch = width
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(width, n_classes, 1)
        self.n_classes = n_classes
        self.receptive_field = 1 + 2 * n_layers
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Built after the Kaiming loop (its projection keeps PyTorch's default init), and only
        # when asked: without it the model, its init and its state_dict are as before.
        self.relation = PixelRelation(width, relation) if relation is not None else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, width, H, W) hidden features (what the logits read)."""
        return self.body(x)

    def pixel_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, n_classes, H, W) pixel logits (refined with a PRC module)."""
        features = self.body(x)
        raw = self.classifier(features)
        return raw if self.relation is None else self.relation(features, raw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel logits, as `pixel_logits` (pooling is done by `mil_pool`, which needs the valid mask)."""
        return self.pixel_logits(x)


def mil_pool(
    logits: torch.Tensor, valid: torch.Tensor, pooling: str, topk_fraction: float, lse_r: float
) -> torch.Tensor:
    """Tile logits (B, C) from pixel logits (B, C, H, W), over the valid pixels only.

    valid: (B, H, W) bool; padding outside the scene is not evidence for or against a class.
    topk: the mean of the ceil(topk_fraction x n_valid) highest pixel logits of each tile.
    lse: (1 / r) log mean exp(r x logit), a smooth maximum (r -> inf: max, r -> 0: mean).
    """
    b, c = logits.shape[:2]
    flat = logits.reshape(b, c, -1)
    mask = valid.reshape(b, 1, -1).expand(-1, c, -1)
    n_valid = mask[:, 0].sum(dim=1).clamp_min(1)  # (B,)
    if pooling == "topk":
        ranked = torch.where(mask, flat, torch.full_like(flat, -math.inf)).sort(dim=2, descending=True).values
        k = torch.ceil(n_valid.float() * topk_fraction).long().clamp_min(1)  # (B,)
        ranks = torch.arange(flat.shape[2], device=flat.device)
        take = (ranks[None, :] < k[:, None]).unsqueeze(1)  # (B, 1, N): the k best of each tile
        return torch.where(take, ranked, torch.zeros_like(ranked)).sum(dim=2) / k[:, None].float()
    if pooling == "lse":
        scaled = torch.where(mask, flat * lse_r, torch.full_like(flat, -math.inf))
        return (torch.logsumexp(scaled, dim=2) - torch.log(n_valid.float())[:, None]) / lse_r
    raise UserInputError(f"parameter `localization.mil.pooling` must be one of {list(POOLINGS)}, got {pooling!r}")
