"""USR and VPE (seed 003, §3.5) applied to the heatmaps of any localizer, at `generate_cams` time.

The paper refines CLIP's CAMs online with adapter (+ DINO) features and CLIP attention maps.
Neither module needs a trained weight of its own, only features and a CAM, so here they run on a
localizer's own `features` (learning/localizers.py: MIL's hidden layer, the CAM classifier's
backbone map) — weight-free — and on CLIP features when a localizer provides attention maps too.
The math is models/cam_refinement.py; this module owns grids, valid parts and the tile order.

Per tile, on the heatmap scale 0..1 (uint8 / 255):
- USR (`localization.usr`): features and heatmap area-pooled to at most `max_grid` tokens per side
  (the affinity is hw x hw: 32 x 32 tokens = a 1024 x 1024 matrix, 4 MB), diffused over the valid
  tokens (eq. 11-15), the refined grid upsampled (bilinear) back to the tile. Padding tokens of
  border tiles take no part in the affinity.
- VPE (`localization.vpe`): at the features' own grid (linear cost: no cap needed). Seeds (eq.
  16-17) of class c come from the CAM pooled to that grid; S_c (eq. 19) is upsampled to the tile
  and multiplies the full-resolution CAM (eq. 20), so VPE alone keeps the heatmap's detail.

Which tiles update the prototypes (eq. 18): only the train tiles, in tile-id order, and for class
c only those whose image-level label is positive for c (weak supervision: no pixel labels, and a
tile without c has no c seeds to trust). That pass runs first, so every tile, train or test, is
then refined with the same final prototypes: the result does not depend on batch order.

Output: the `cams` contract (uint8 0..255, 0 outside each tile's valid part).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from wsss_project.contracts import HEATMAP_MAX
from wsss_project.errors import UserInputError
from wsss_project.learning.mil_training import valid_masks
from wsss_project.models.cam_refinement import (
    MomentumPrototypes,
    argmax_regions,
    diffuse,
    diffusion_matrix,
    joint_affinity,
    prototype_cam,
    refining_map,
    seed_positions,
    tokens,
)

logger = logging.getLogger(__name__)

USR_SECTION = "localization.usr"
VPE_SECTION = "localization.vpe"
# A pooled token counts as inside the scene when at least half of its pixels are.
_VALID_SHARE = 0.5


def refinement_enabled(localization: Mapping[str, Any]) -> bool:
    """True when USR or VPE is switched on."""
    return bool(localization["usr"]["enabled"]) or bool(localization["vpe"]["enabled"])


def _pool(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., H, W) float -> (..., h, w) by area averaging (identity when the size already matches)."""
    if tuple(x.shape[-2:]) == size:
        return x
    lead = x.shape[:-2]
    return F.adaptive_avg_pool2d(x.reshape(-1, 1, *x.shape[-2:]), size).reshape(*lead, *size)


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, h, w) -> (C, H, W) bilinear."""
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]


def _grid(height: int, width: int, max_side: int) -> tuple[int, int]:
    return min(height, max_side), min(width, max_side)


def _pool_attention(attentions: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """(L, hw, hw) attention on `grid` -> (L, n, n) on the pooled `size`: both the query and the
    key side area-averaged, as the features are."""
    if grid == size:
        return attentions
    layers, n = attentions.shape[0], size[0] * size[1]
    keys = _pool(attentions.reshape(layers, -1, *grid), size).reshape(layers, -1, n)  # (L, hw, n)
    return _pool(keys.transpose(1, 2).reshape(layers, n, *grid), size).reshape(layers, n, n).transpose(1, 2)


@dataclass
class CamRefiner:
    """USR and/or VPE over a tile set, from the `localization.usr` and `localization.vpe` settings."""

    usr: Mapping[str, Any]
    vpe: Mapping[str, Any]
    n_classes: int
    prototypes: MomentumPrototypes = field(init=False)
    seconds: dict[str, float] = field(default_factory=lambda: {"usr": 0.0, "vpe": 0.0})
    calls: dict[str, int] = field(default_factory=lambda: {"usr": 0, "vpe": 0})

    def __post_init__(self) -> None:
        self.prototypes = MomentumPrototypes(self.n_classes, float(self.vpe["momentum"]))

    @property
    def uses_prototypes(self) -> bool:
        return bool(self.vpe["enabled"])

    # ------------------------------------------------------------------ USR
    def _usr(self, cam: torch.Tensor, features: torch.Tensor, valid: torch.Tensor,
             attentions: torch.Tensor | None) -> torch.Tensor:
        """(C, H, W) CAM -> M_f (C, H, W): eq. 11-15 on the pooled grid, upsampled, 0 outside `valid`."""
        started = time.perf_counter()
        size = _grid(*features.shape[-2:], int(self.usr["max_grid"]))
        grid_valid = (_pool(valid.float(), size) >= _VALID_SHARE).flatten()
        inside = torch.nonzero(grid_valid).flatten()
        flat_cam = _pool(cam, size).reshape(cam.shape[0], -1)
        refined = torch.zeros_like(flat_cam)
        if len(inside):
            affinity = joint_affinity(
                tokens(_pool(features, size))[inside], float(self.usr["temperature"]), float(self.usr["margin"])
            )
            tile_attentions = None if attentions is None else (
                _pool_attention(attentions.float(), tuple(features.shape[-2:]), size)[:, inside][:, :, inside]
            )
            diffusion = diffusion_matrix(refining_map(affinity, tile_attentions), int(self.usr["alpha"]))
            refined[:, inside] = diffuse(flat_cam[:, inside], diffusion)
        # The symmetrised matrix is only nearly stochastic: a few sums exceed 1 after the power.
        out = _upsample(refined.reshape(cam.shape[0], *size), tuple(cam.shape[-2:])).clamp(0, 1) * valid
        self.seconds["usr"] += time.perf_counter() - started
        self.calls["usr"] += 1
        return out

    # ------------------------------------------------------------------ VPE
    def _seed_tokens(self, cam: torch.Tensor, features: torch.Tensor, valid: torch.Tensor):
        """(class grid CAMs (C, n) on the feature grid, tokens (n, K), valid tokens (n,) bool)."""
        size = tuple(features.shape[-2:])
        grid_valid = (_pool(valid.float(), size) >= _VALID_SHARE).flatten()
        return _pool(cam, size).reshape(cam.shape[0], -1) * grid_valid, tokens(features), grid_valid

    def update_prototypes(self, cam: torch.Tensor, features: torch.Tensor, valid: torch.Tensor,
                          positive_classes: list[int]) -> None:
        """Eq. 16-18 on one train tile: seeds of each class the tile is labelled positive for
        (0-based ids) update that class's prototype."""
        grid_cam, token_features, _ = self._seed_tokens(cam, features, valid)
        regions = argmax_regions(grid_cam, float(self.vpe["background_score"]))
        for class_id in positive_classes:
            seeds = seed_positions(grid_cam[class_id], regions == class_id + 1, float(self.vpe["seed_fraction"]))
            self.prototypes.update(class_id, token_features[seeds])

    def _vpe(self, cam: torch.Tensor, features: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """M_c = Norm(M_f^c ⊙ S_c²) (eq. 19-20) for every class, (C, H, W)."""
        started = time.perf_counter()
        token_features = tokens(features)
        out = torch.empty_like(cam)
        for class_id in range(self.n_classes):
            similarity = self.prototypes.similarity(class_id, token_features).reshape(1, *features.shape[-2:])
            out[class_id] = prototype_cam(cam[class_id], _upsample(similarity, tuple(cam.shape[-2:]))[0], valid)
        self.seconds["vpe"] += time.perf_counter() - started
        self.calls["vpe"] += 1
        return out

    def check_prototypes(self, classes: list[str]) -> None:
        """Every class needs a prototype before VPE can refine with it."""
        missing = [name for name, count in zip(classes, self.prototypes.updates, strict=True) if count == 0]
        if missing:
            raise UserInputError(
                f"{VPE_SECTION}: no seed of class(es) {missing} in any train tile labelled positive "
                f"(no CAM value above {VPE_SECTION}.background_score = {self.vpe['background_score']}): "
                "lower background_score, or switch vpe off"
            )

    # ------------------------------------------------------------------ both
    def refined_cam(self, cam: torch.Tensor, features: torch.Tensor, valid: torch.Tensor,
                    attentions: torch.Tensor | None = None, with_vpe: bool = True) -> torch.Tensor:
        """One tile's (C, H, W) CAM 0..1 after USR (if on) and VPE (if on and `with_vpe`)."""
        if self.usr["enabled"]:
            cam = self._usr(cam, features, valid, attentions)
        if self.vpe["enabled"] and with_vpe:
            cam = self._vpe(cam, features, valid)
        return cam

    def refine_batch(self, heatmaps: np.ndarray, features: torch.Tensor, valid_sizes: np.ndarray,
                     attentions: torch.Tensor | None = None) -> np.ndarray:
        """(N, C, H, W) uint8 heatmaps + (N, K, h, w) features -> refined (N, C, H, W) uint8 heatmaps."""
        valid = valid_masks(valid_sizes, *heatmaps.shape[-2:])
        cams = torch.from_numpy(heatmaps).float() / HEATMAP_MAX
        out = np.empty_like(heatmaps)
        for i in range(len(heatmaps)):
            tile_attentions = None if attentions is None else attentions[i]
            refined = self.refined_cam(cams[i], features[i].float(), valid[i], tile_attentions)
            out[i] = (refined * HEATMAP_MAX).round().clamp(0, HEATMAP_MAX).to(torch.uint8).numpy()
        return out

    def learn_from_batch(self, heatmaps: np.ndarray, features: torch.Tensor, valid_sizes: np.ndarray,
                         labels: np.ndarray, attentions: torch.Tensor | None = None) -> None:
        """Prototype pass over (N, C, H, W) train heatmaps with their (N, C) image-level labels."""
        valid = valid_masks(valid_sizes, *heatmaps.shape[-2:])
        cams = torch.from_numpy(heatmaps).float() / HEATMAP_MAX
        for i in range(len(heatmaps)):
            positive = [int(c) for c in np.flatnonzero(labels[i])]
            if not positive:
                continue
            tile_attentions = None if attentions is None else attentions[i]
            cam = self.refined_cam(cams[i], features[i].float(), valid[i], tile_attentions, with_vpe=False)
            self.update_prototypes(cam, features[i].float(), valid[i], positive)

    def seconds_per_tile(self) -> dict[str, float]:
        """Mean seconds of each refinement per tile it ran on (USR also runs in the prototype pass)."""
        return {name: self.seconds[name] / self.calls[name] for name in self.calls if self.calls[name]}

    def log_rates(self) -> None:
        for name, seconds in self.seconds_per_tile().items():
            logger.info("CAM refinement %s: %d tiles, %.4f s/tile", name.upper(), self.calls[name], seconds)
