"""ResUNet (Zhang et al., 2018): a U-Net whose stages are pre-activation residual units.

The segmenter that APSAM trains on pseudo-masks. Encoder: one plain residual stem at full
resolution, then `depth` residual units that halve the resolution and double the width.
Decoder: transposed-conv upsampling, concatenation with the skip, one residual unit per level.
Output: logits at input resolution (B, n_outputs, H, W); H and W must be divisible by 2**depth.
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualUnit(nn.Module):
    """Pre-activation residual unit: (BN-ReLU-conv3x3) x 2 + projection shortcut if needed."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.ReLU(inplace=False),  # not in-place: the shortcut may still read the input
            nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class _Stem(nn.Module):
    """First unit of ResUNet: conv-BN-ReLU-conv on the raw image (no pre-activation)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        )
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class ResUNet(nn.Module):
    """Residual encoder-decoder with skip connections; logits at input resolution.

    Args:
        in_channels: image channels (3 for RGB).
        n_outputs: output channels (classes incl. background for softmax training).
        base_width: channels at full resolution; level i has base_width * 2**i.
        depth: number of downsamplings (the bridge sits at 1 / 2**depth).
    """

    def __init__(
        self, in_channels: int = 3, n_outputs: int = 2, base_width: int = 32, depth: int = 3
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth = depth
        self.n_outputs = n_outputs
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.stem = _Stem(in_channels, widths[0])
        self.down = nn.ModuleList(
            ResidualUnit(widths[i], widths[i + 1], stride=2) for i in range(depth)
        )
        # Transposed convs (not bilinear upsampling) because their CUDA backward is
        # deterministic, which keeps seeded GPU runs repeatable.
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth)
        )
        self.dec = nn.ModuleList(ResidualUnit(2 * widths[i], widths[i]) for i in range(depth))
        self.head = nn.Sequential(
            nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True), nn.Conv2d(widths[0], n_outputs, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 2**self.depth
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(
                f"ResUNet(depth={self.depth}) needs H and W divisible by {factor}, "
                f"got {tuple(x.shape[-2:])}"
            )
        skips = [self.stem(x)]
        for unit in self.down:
            skips.append(unit(skips[-1]))
        y = skips.pop()
        for i in reversed(range(self.depth)):
            y = self.dec[i](torch.cat([self.up[i](y), skips[i]], dim=1))
        return self.head(y)

    def output_prefix(self) -> str:
        """State-dict prefix of the output layer (the 1x1 conv to ``n_outputs``): the only
        tensors whose shape depends on the number of classes."""
        return f"head.{len(self.head) - 1}."

    def body_state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor of the state_dict but the output layer's (encoder, decoder, the head's BN)."""
        prefix = self.output_prefix()
        return {k: v for k, v in self.state_dict().items() if not k.startswith(prefix)}

    def load_body(self, body: dict[str, torch.Tensor]) -> None:
        """Copy a body (:meth:`body_state_dict` of a ResUNet of the same base_width and depth,
        any ``n_outputs``) into this model; its own output layer is kept as it is.

        Every body tensor must be present with this model's shape: a partial copy would leave
        layers at random weights without saying so.
        """
        own = self.body_state_dict()
        body = {k: v for k, v in body.items() if not k.startswith(self.output_prefix())}
        missing, extra = sorted(set(own) - set(body)), sorted(set(body) - set(own))
        wrong = [k for k in own if k in body and tuple(body[k].shape) != tuple(own[k].shape)]
        if missing or extra or wrong:
            raise ValueError(
                f"the pre-trained body does not fit this ResUNet: missing {missing[:3]}, unexpected {extra[:3]}, "
                f"other shape {wrong[:3]} (same base_width and depth needed)"
            )
        self.load_state_dict({**self.state_dict(), **body})
