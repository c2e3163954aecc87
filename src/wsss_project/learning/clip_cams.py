"""`localization.method: clip` (seed 003 eq. 9): patch-text CAMs of a frozen CLIP and the enriched
class embeddings of `text_prototype_kb`, and the features USR / VPE refine them with.

Nothing is trained: `fit` copies each class's T_c (the `text_prototypes` table) into a
ClipTextHead, the saved `cam_model`. CLIP (and DINOv2, for USR's eq. 10) are loaded from
`text_prototype_kb.clip` / `text_prototype_kb.dino.path` the first time a model needs them and
kept on that model object (not in its state_dict) for the rest of the node.

- heatmap: cos(F_i, T_c) per patch, upsampled (bilinear) to the tile, min-max normalised per tile
  and class over the tile's valid part, uint8 0..255, 0 outside (the `cams` contract). Every tile
  therefore spans 0..255, whether it holds the class or not: `threshold: auto` then separates
  positives from negatives by the shape of the histograms, as for the CAM classifier.
- tile probability: (1 + mean of the top `clip.topk_fraction` cosines of the valid part) / 2 —
  monotone in the evidence (AUC is meaningful), 0.5 = cosine 0; CLIP's softmax over classes
  would give 1 for every tile of a one-class problem.
- features (VPE, ALPS, USR's F_cd): CLIP patch tokens; with a DINOv2 set, F_cd = Concat(CLIP,
  DINOv2 resized to the CLIP grid) (eq. 10), each L2-normalised per token first, so that neither
  model dominates the affinity by the scale of its features.
- attentions (USR eq. 12-14): the head-averaged patch attention of CLIP's last
  `usr.attention_layers` blocks (layers N_0..N).

Called with the localization parameters plus the run context the node adds (CONTEXT_KEY): the
`text_prototypes` table, the `text_prototype_kb` parameters and the class names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from wsss_project.contracts import HEATMAP_MAX
from wsss_project.errors import UserInputError
from wsss_project.foundation.clip import ClipBundle, clip_image_features, load_clip
from wsss_project.foundation.dino import DinoBundle, dino_features, load_dino
from wsss_project.learning.mil_training import valid_masks
from wsss_project.models.clip_cam import ClipTextHead

CONTEXT_KEY = "run_context"  # the node's extra inputs, beside the localization parameters
CLASS_COLUMN, EMBEDDING_COLUMN = "class", "embedding"  # of text_prototype_kb's `text_prototypes`
RUN_KB = "run `kedro run --pipeline text_prototype_kb` first (text_prototype_kb.clip.checkpoint set)"
_EPS = 1e-8


def run_context(classes: list[str], text_prototypes: pd.DataFrame | None, text_prototype_kb: Mapping | None) -> dict:
    """What a localizer may read beside its parameters (only `clip` reads the last two)."""
    return {"classes": list(classes), "text_prototypes": text_prototypes, "text_prototype_kb": text_prototype_kb}


def class_text_embeddings(params: Mapping[str, Any]) -> np.ndarray:
    """(C, embed_dim) T_c of the run's classes, in `classes` order, from the `text_prototypes` table."""
    context = params[CONTEXT_KEY]
    table, classes = context["text_prototypes"], context["classes"]
    if table is None or len(table) == 0:
        raise UserInputError(f"localization.method: clip needs the class text prototypes (`text_prototypes`): {RUN_KB}")
    by_class = {name: np.asarray(row, dtype=np.float32) for name, row in zip(table[CLASS_COLUMN], table[EMBEDDING_COLUMN], strict=True)}
    missing = [name for name in classes if name not in by_class]
    if missing:
        raise UserInputError(
            f"localization.method: clip: `text_prototypes` has no row for class(es) {missing} "
            f"(it has {sorted(by_class)}): {RUN_KB} with the run's `classes`"
        )
    return np.stack([by_class[name] for name in classes])


def build_head(n_classes: int) -> ClipTextHead:
    """An empty head (to load a saved cam_model into: it takes the saved embeddings' width)."""
    return ClipTextHead(n_classes)


def fit_head(params: Mapping[str, Any]) -> tuple[ClipTextHead, list[dict[str, float]]]:
    """The head holding T_c; nothing is trained (the history says so: 0 trained parameters)."""
    embeddings = torch.from_numpy(class_text_embeddings(params))
    head = ClipTextHead(*embeddings.shape)
    head.text_embeddings.copy_(embeddings)
    return head, [{"step": 0, "trained_parameters": 0.0}]


@dataclass(frozen=True)
class Backbones:
    clip: ClipBundle
    dino: DinoBundle | None


def _backbones(head: ClipTextHead, params: Mapping[str, Any], device: torch.device) -> Backbones:
    """CLIP (and DINOv2 when `text_prototype_kb.dino.path` is set), loaded once per head object."""
    cached = getattr(head, "_backbones", None)  # a plain attribute: never part of the state_dict
    if cached is None:
        kb = params.get(CONTEXT_KEY, {}).get("text_prototype_kb")
        if kb is None:
            raise UserInputError(f"localization.method: clip needs the `text_prototype_kb` parameters: {RUN_KB}")
        dino_path = kb["dino"]["path"]
        cached = Backbones(
            clip=load_clip(kb["clip"]["model_name"], kb["clip"]["checkpoint"], device),
            dino=None if dino_path is None else load_dino(dino_path, device),
        )
        object.__setattr__(head, "_backbones", cached)
    return cached


def _clip_forward(head, images, params, device, with_attentions: bool = False):
    clip = params["clip"]
    backbones = _backbones(head, params, device)
    return backbones, clip_image_features(
        backbones.clip, images, int(clip["batch_size"]), clip["image_size"],
        with_attentions=with_attentions, dense_path=clip["dense_path"],
    )


def _cosine_from_tokens(head, patch_tokens: torch.Tensor, images) -> torch.Tensor:
    """(N, C, H, W) eq. 9 cosines of CLIP's patch tokens, upsampled to the tiles."""
    with torch.inference_mode():
        cosine = head.cpu()(patch_tokens)
    return F.interpolate(cosine, size=images.shape[1:3], mode="bilinear", align_corners=False)


def _cosine_on_tiles(head, images, params, device) -> torch.Tensor:
    _, features = _clip_forward(head, images, params, device)
    return _cosine_from_tokens(head, features.patch_tokens, images)


def clip_heatmaps(head, images, valid_sizes, params, device) -> np.ndarray:
    """(N, C, H, W) uint8: per tile and class, min-max over the valid part, 0 outside."""
    return _heatmaps_from_cosine(_cosine_on_tiles(head, images, params, device), images, valid_sizes)


def _heatmaps_from_cosine(cosine: torch.Tensor, images, valid_sizes) -> np.ndarray:
    valid = valid_masks(valid_sizes, *images.shape[1:3])[:, None].expand_as(cosine)
    inf = torch.tensor(float("inf"))
    low = torch.where(valid, cosine, inf).amin(dim=(2, 3), keepdim=True)
    high = torch.where(valid, cosine, -inf).amax(dim=(2, 3), keepdim=True)
    scaled = (cosine - low) / (high - low).clamp(min=_EPS)
    return (scaled * valid * HEATMAP_MAX).round().clamp(0, HEATMAP_MAX).to(torch.uint8).numpy()


def clip_tile_probabilities(head, images, valid_sizes, params, device) -> np.ndarray:
    """(N, C): (1 + mean of the top `clip.topk_fraction` valid cosines) / 2."""
    cosine = _cosine_on_tiles(head, images, params, device)
    valid = valid_masks(valid_sizes, *images.shape[1:3])
    fraction = float(params["clip"]["topk_fraction"])
    out = np.empty(cosine.shape[:2], dtype=np.float32)
    for i in range(len(cosine)):
        inside = cosine[i][:, valid[i]]  # (C, n valid pixels)
        k = max(1, int(round(fraction * inside.shape[1])))
        out[i] = ((1 + inside.topk(k, dim=1).values.mean(dim=1)) / 2).numpy()
    return out


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=1, eps=_EPS)


def clip_refinement_features(head, images, params, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """F_cd (N, K, h, w) on the CLIP grid and, when USR is on, the last `usr.attention_layers`
    CLIP attention maps (N, L, hw, hw); None otherwise."""
    backbones, features = _clip_forward(head, images, params, device, bool(params["usr"]["enabled"]))
    return _refinement_from(backbones, features, images, params)


def clip_heatmaps_and_refinement_features(
    head, images, valid_sizes, params, device,
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor | None]:
    """clip_heatmaps and clip_refinement_features from one CLIP forward (its patch tokens give both the
    eq. 9 cosines and F_cd; USR's attentions are recorded in the same pass)."""
    backbones, features = _clip_forward(head, images, params, device, bool(params["usr"]["enabled"]))
    heatmaps = _heatmaps_from_cosine(_cosine_from_tokens(head, features.patch_tokens, images), images, valid_sizes)
    return (heatmaps, *_refinement_from(backbones, features, images, params))


def _refinement_from(backbones: Backbones, features, images, params) -> tuple[torch.Tensor, torch.Tensor | None]:
    """F_cd (with DINOv2 when set) and, with USR on, the last `usr.attention_layers` attention maps."""
    usr = params["usr"]
    with_attentions = bool(usr["enabled"])
    joint = _unit(features.patch_tokens)
    if backbones.dino is not None:
        dino = dino_features(backbones.dino, images, int(params["clip"]["batch_size"]), params["clip"]["dino_image_size"])
        resized = F.interpolate(dino.patch_tokens, size=features.grid, mode="bilinear", align_corners=False)
        joint = torch.cat([joint, _unit(resized)], dim=1)
    if not with_attentions:
        return joint, None
    layers = int(usr["attention_layers"])
    if layers > len(features.attentions):
        raise UserInputError(
            f"parameter `localization.usr.attention_layers` ({layers}) exceeds the CLIP's {len(features.attentions)} blocks"
        )
    return joint, torch.stack(features.attentions[-layers:], dim=1)
