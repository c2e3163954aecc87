"""A light decoder that reconstructs the input tile from a localizer's feature map (PRC's IR loss).

PRC (seed 004) adds an image reconstruction (IR) loss to the classifier: image-level labels
supervise one number per tile and class, so the classifier is rewarded for the few most
discriminative pixels and its CAM stays sparse. Asking the *same* features to reconstruct the
image is supervision at every pixel: features that must also describe the rest of the object
cannot collapse onto its most telling part, so the CAM read from them (a linear map of them)
covers more of it. Only the paper's README is public; this decoder is our design:

    features (B, K, h, w)
      -> 3x3 conv to `width`, BN, ReLU
      -> n_upsamplings x (bilinear x2, 3x3 conv, BN, ReLU)
      -> 1x1 conv to the image's channels
      -> bilinear resize to the tile size (a no-op when the strides are powers of two)

It is deliberately small (a few convolutions, no skip connections): with skips from early
layers the image could be copied around the features being trained, and the loss would stop
shaping them. The decoder is used only while training (learning/prc.py) and is not part of the
saved localizer.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

IMAGE_CHANNELS = 3
UPSAMPLING_FACTOR = 2  # each decoder stage doubles the feature grid


def upsamplings_for(stride: float) -> int:
    """Decoder stages (each x2) that bring a grid at `stride` back to the tile: ceil(log2 stride)."""
    if stride <= 0:
        raise ValueError(f"feature stride must be positive, got {stride}")
    n_stages = 0
    while UPSAMPLING_FACTOR**n_stages < stride:  # integer powers: exact where log2 would round
        n_stages += 1
    return n_stages


class ReconstructionDecoder(nn.Module):
    """Features (B, K, h, w) -> reconstructed image (B, 3, H, W) at a requested size.

    Args:
        in_channels: K, the channels of the localizer's feature map.
        width: channels of every decoder layer (`localization.ir_loss.decoder_width`).
        n_upsamplings: x2 stages; `upsamplings_for(feature stride)`.
    """

    def __init__(self, in_channels: int, width: int, n_upsamplings: int) -> None:
        super().__init__()
        if in_channels < 1 or width < 1 or n_upsamplings < 0:
            raise ValueError(
                f"ReconstructionDecoder needs in_channels, width >= 1 and n_upsamplings >= 0, "
                f"got {in_channels}, {width}, {n_upsamplings}"
            )
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                   nn.ReLU(inplace=True)]
        for _ in range(n_upsamplings):
            layers += [
                nn.Upsample(scale_factor=UPSAMPLING_FACTOR, mode="bilinear", align_corners=False),
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
        self.body = nn.Sequential(*layers)
        self.to_image = nn.Conv2d(width, IMAGE_CHANNELS, 1)
        self.n_upsamplings = n_upsamplings

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The image reconstructed from `features`, resized to `size` = (H, W)."""
        image = self.to_image(self.body(features))
        if tuple(image.shape[-2:]) != tuple(size):
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        return image
