"""Localization methods behind one interface, and the registry that is the one place knowing their names.

A localizer is fitted on tiles and image-level labels and turns tiles into the `cams` contract:
one uint8 heatmap 0..255 per tile and class, 0 outside the scene. Nodes look the method up once
(`localizer_for(localization)`) and never branch on its name.

- `mil`: the pixel-MIL scorer (models/pixel_mil.py); heatmap = sigmoid x 255, so 128 = p 0.5.
- `cam_classifier`: APSAM's ResNet + GAP classifier; heatmap = ReLU CAM / its peak over the
  scene part of the tile. The choice for pretrained backbones.

- `clip`: seed 003's patch-text CAMs (eq. 9) of a frozen CLIP and `text_prototype_kb`'s enriched
  class embeddings (learning/clip_cams.py); nothing is trained.

`mil` and `cam_classifier` take PRC's `ir_loss` and `prc_module` (learning/prc.py): with the PRC
module on, the saved model holds it and the heatmaps are made from the refined map. Every
localizer gives `refinement_features` for seed 003's USR / VPE (learning/cam_refinement.py).

`params` is the `localization` section plus `seed` and the node's run context
(learning/clip_cams.py: CONTEXT_KEY), which only `clip` reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from wsss_project.learning.cam_training import (
    NAMESPACE,
    build_cam_classifier,
    compute_cams,
    images_to_tensor,
    predict_tile_probabilities,
    train_cam_classifier,
)
from wsss_project.learning.clip_cams import (
    build_head,
    clip_heatmaps,
    clip_heatmaps_and_refinement_features,
    clip_refinement_features,
    clip_tile_probabilities,
    fit_head,
)
from wsss_project.learning.mil_training import (
    build_pixel_mil,
    mil_probabilities,
    mil_tile_probabilities,
    probabilities_to_heatmap,
    train_pixel_mil,
    valid_masks,
)
from wsss_project.learning.prc import relation_spec


class Localizer(Protocol):
    """What every localization method provides."""

    def fit(
        self, images: np.ndarray, labels: np.ndarray, valid_sizes: np.ndarray, params: Mapping[str, Any],
        device: torch.device,
    ) -> tuple[nn.Module, list[dict[str, float]]]:
        """Train on (N, H, W, 3) uint8 tiles and (N, C) image-level labels; return model and history."""

    def build(self, n_classes: int, params: Mapping[str, Any]) -> nn.Module:
        """An untrained model of the configured architecture (to load a saved state_dict into)."""

    def heatmaps(
        self, model: nn.Module, images: np.ndarray, valid_sizes: np.ndarray, params: Mapping[str, Any],
        device: torch.device,
    ) -> np.ndarray:
        """(N, C, H, W) uint8 heatmaps, 0 outside each tile's valid (scene) part."""

    def tile_probabilities(
        self, model: nn.Module, images: np.ndarray, valid_sizes: np.ndarray, params: Mapping[str, Any],
        device: torch.device,
    ) -> np.ndarray:
        """(N, C) probability that each tile holds each class."""

    def features(
        self, model: nn.Module, images: np.ndarray, params: Mapping[str, Any], device: torch.device,
    ) -> torch.Tensor:
        """(N, K, h, w) float32 encoder features (before the classifier) on the CPU; the grid
        covers the whole tile (ALPS eq. 4 upsamples it to the tile, learning/alps.py)."""

    def refinement_features(
        self, model: nn.Module, images: np.ndarray, params: Mapping[str, Any], device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """USR / VPE inputs: F_cd (N, K, h, w) covering the tile, and attention maps (N, L, hw, hw)
        on the same grid for USR's eq. 12-14, or None (then R = A_cd)."""

    def heatmaps_and_refinement_features(
        self, model: nn.Module, images: np.ndarray, valid_sizes: np.ndarray, params: Mapping[str, Any],
        device: torch.device,
    ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor | None]:
        """heatmaps and refinement_features of the same tiles, from one forward where the method allows."""


@dataclass(frozen=True)
class MilLocalizer:
    """Pixel MIL: small-receptive-field scorer, top-k (or LSE) pooled, BCE on tile labels."""

    def fit(self, images, labels, valid_sizes, params, device):
        return train_pixel_mil(images, labels, valid_sizes, params, device)

    def build(self, n_classes, params):
        return build_pixel_mil(n_classes, params["mil"], relation_spec(params))

    def heatmaps(self, model, images, valid_sizes, params, device):
        probs = mil_probabilities(model, images, params, device)
        probs = probs * valid_masks(valid_sizes, *images.shape[1:3])[:, None].float()
        return probabilities_to_heatmap(probs)

    def tile_probabilities(self, model, images, valid_sizes, params, device):
        return mil_tile_probabilities(model, images, valid_sizes, params, device)

    def features(self, model, images, params, device):
        # The scorer's last hidden layer, at input_scale as the scorer sees the tile.
        scale = float(params["mil"]["input_scale"])
        model.eval()
        with torch.inference_mode():
            x = images_to_tensor(images, params["image_mean"], params["image_std"], device)
            x = x if scale == 1.0 else F.interpolate(x, scale_factor=scale, mode="area")
            return model.body(x).float().cpu()

    def refinement_features(self, model, images, params, device):
        return self.features(model, images, params, device), None

    def heatmaps_and_refinement_features(self, model, images, valid_sizes, params, device):
        return (self.heatmaps(model, images, valid_sizes, params, device),
                *self.refinement_features(model, images, params, device))


@dataclass(frozen=True)
class CamClassifierLocalizer:
    """APSAM's CAM classifier (ResNet + GAP + linear head, eq. 1)."""

    def fit(self, images, labels, valid_sizes, params, device):
        return train_cam_classifier(images, labels, params, device)

    def build(self, n_classes, params):
        return build_cam_classifier(n_classes, params, load_pretrained=False)

    def heatmaps(self, model, images, valid_sizes, params, device):
        valid = valid_masks(valid_sizes, *images.shape[1:3])
        return compute_cams(model, images, params, device, len(images), valid)

    def tile_probabilities(self, model, images, valid_sizes, params, device):
        return predict_tile_probabilities(model, images, params, device, len(images))

    def features(self, model, images, params, device):
        # The backbone's feature map F, the one the CAM is a linear map of (stride output_stride).
        model.eval()
        with torch.inference_mode():
            x = images_to_tensor(images, params["image_mean"], params["image_std"], device)
            return model.features(x).float().cpu()

    def refinement_features(self, model, images, params, device):
        return self.features(model, images, params, device), None

    def heatmaps_and_refinement_features(self, model, images, valid_sizes, params, device):
        return (self.heatmaps(model, images, valid_sizes, params, device),
                *self.refinement_features(model, images, params, device))


@dataclass(frozen=True)
class ClipLocalizer:
    """Seed 003's frozen CLIP: eq. 9 patch-text cosines to the enriched class embeddings."""

    def fit(self, images, labels, valid_sizes, params, device):
        return fit_head(params)

    def build(self, n_classes, params):
        return build_head(n_classes)

    def heatmaps(self, model, images, valid_sizes, params, device):
        return clip_heatmaps(model, images, valid_sizes, params, device)

    def tile_probabilities(self, model, images, valid_sizes, params, device):
        return clip_tile_probabilities(model, images, valid_sizes, params, device)

    def features(self, model, images, params, device):
        return clip_refinement_features(model, images, {**params, "usr": {**params["usr"], "enabled": False}}, device)[0]

    def refinement_features(self, model, images, params, device):
        return clip_refinement_features(model, images, params, device)

    def heatmaps_and_refinement_features(self, model, images, valid_sizes, params, device):
        return clip_heatmaps_and_refinement_features(model, images, valid_sizes, params, device)


# Read-only: adding a method is a new class plus one entry here.
LOCALIZERS: Mapping[str, Localizer] = MappingProxyType(
    {"mil": MilLocalizer(), "cam_classifier": CamClassifierLocalizer(), "clip": ClipLocalizer()}
)


def localizer_for(localization: Mapping[str, Any]) -> Localizer:
    """The localizer named by `localization.method` (the schema's choices: this registry's names)."""
    # Imported here: the schema imports this module (for LOCALIZERS).
    from wsss_project.validation.schema import check_section

    method = localization.get("method")
    check_section({"method": method}, NAMESPACE, partial=True)
    return LOCALIZERS[method]
