"""Pixel relationship constraint (PRC) module: a feature affinity that propagates a CAM.

PRC (seed 004) adds a module that "strengthens the global correlation of target regions":
remote-sensing tiles have no distinct background, and an image-level classifier activates only
scattered, most discriminative patches of an object. Pixels of one landslide look alike wherever
they are in the tile, so letting every pixel borrow the activation of the pixels it resembles
spreads the CAM over the whole object. Only the paper's README is public; our design:

    e_i   = normalise(P f_i)                      P: 1x1 conv to `projection_dim` (learned)
    A_ij  = softmax_j( cos(e_i, e_j) / tau )      over the key positions j of the same tile
    R_c   = A . CAM_c                             refined CAM: rows of A sum to 1, so R_c(i) is
                                                  a convex combination of CAM values

Keys are the positions of the feature grid average-pooled to at most `key_grid` x `key_grid`
(values: the CAM pooled the same way); queries stay at full feature resolution. Why: the full
affinity is (h w)^2 per tile, 16384^2 floats for the pixel scorer on a 256 tile; against
`key_grid`^2 region keys it is linear in the pixels, and a pixel still gets its own row, so the
refined CAM keeps the query resolution. With a feature grid no larger than `key_grid`, keys are
the positions themselves and R = A . CAM exactly.

The temperature tau is fixed (a parameter, not learned): a learned one could shrink until A is
near one-hot on the most similar region, i.e. until nothing propagates. Padding of border tiles
is not masked out of the keys: it is reflected scene, so as keys those positions only repeat
evidence the tile already holds. How the module is trained (classification loss on the pooled
refined CAM, a constraint between raw and refined CAM) is in learning/prc.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class RelationSpec:
    """Settings of the PRC module (`localization.prc_module`): projection channels, tau, key grid side."""

    projection_dim: int
    temperature: float
    key_grid: int


def pool_to_grid(x: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, K, h, w) average-pooled to at most grid x grid positions (unchanged when it fits)."""
    h, w = x.shape[-2:]
    if h <= grid and w <= grid:
        return x
    return F.adaptive_avg_pool2d(x, (min(h, grid), min(w, grid)))


def affinity_from_embeddings(queries: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """A (B, Nq, Nk): softmax over keys of cosine similarity / temperature.

    queries: (B, d, hq, wq), keys: (B, d, hk, wk); neither needs to be normalised.
    """
    q = F.normalize(queries.flatten(2), dim=1).transpose(1, 2)  # (B, Nq, d)
    k = F.normalize(keys.flatten(2), dim=1)  # (B, d, Nk)
    return torch.softmax(torch.bmm(q, k) / temperature, dim=-1)


def propagate(affinity: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """R = A . V: affinity (B, Nq, Nk), values (B, C, hk, wk) -> (B, C, *size) with Nq = size."""
    b, c = values.shape[:2]
    refined = torch.bmm(affinity, values.flatten(2).transpose(1, 2))  # (B, Nq, C)
    return refined.transpose(1, 2).reshape(b, c, *size)


class PixelRelation(nn.Module):
    """Learned projection + fixed-temperature cosine affinity; `forward` returns the refined CAM.

    Args:
        in_channels: channels of the localizer's feature map.
        spec: projection_dim, temperature, key_grid.
    """

    def __init__(self, in_channels: int, spec: RelationSpec) -> None:
        super().__init__()
        if spec.projection_dim < 1 or spec.key_grid < 1 or not spec.temperature > 0:
            raise ValueError(f"PixelRelation needs projection_dim, key_grid >= 1 and temperature > 0, got {spec}")
        self.project = nn.Conv2d(in_channels, spec.projection_dim, 1)
        self.temperature = spec.temperature
        self.key_grid = spec.key_grid

    def affinity(self, features: torch.Tensor) -> torch.Tensor:
        """A (B, h w, Nk) of a feature map (B, K, h, w); every row sums to 1."""
        embeddings = self.project(features)
        return affinity_from_embeddings(embeddings, pool_to_grid(embeddings, self.key_grid), self.temperature)

    def forward(self, features: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
        """Refined CAM (B, C, h, w) = A . CAM (keys and CAM pooled to the key grid)."""
        return propagate(self.affinity(features), pool_to_grid(cam, self.key_grid), tuple(cam.shape[-2:]))
