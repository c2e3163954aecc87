"""CAM refinement of seed 003 (§3.5): USR affinity diffusion (eq. 10-15) and VPE momentum visual
prototypes (eq. 16-20), as plain torch functions on one tile's token grid.

Shapes: `features` (K, h, w) or tokens (hw, K); CAMs (C, h, w) on the heatmap scale 0..1
(uint8 heatmap / 255); attention maps (L, hw, hw). No learnable weights here: the paper's
adapter features come in as `features` (the localizer's own, or CLIP + DINO), so these
functions serve any localizer. Their use over a tile set is learning/cam_refinement.py.

Scaling of F_cd in eq. 11 (the paper leaves it open). Raw dot products of unnormalised features
are in the hundreds, so sigmoid(F^T F) is 1 almost everywhere and the diffusion averages the
whole tile. Here each token is centred (the tile's mean token subtracted, so that ReLU features,
all >= 0, can disagree) and L2-normalised, so F̂^T F̂ is a cosine in [-1, 1], and

    A_cd = sigmoid((cos - margin) / temperature)

with `margin` the cosine at which affinity is 1/2 and `temperature` its sharpness. margin 0 and
temperature 1 give the literal sigmoid(F̂^T F̂) (which, at cos 0, still links every pair at 1/2).
"""

from __future__ import annotations

import logging

import torch
from torch.nn import functional as F

logger = logging.getLogger(__name__)

# Guards divisions by sums and norms that are 0 on an empty or all-zero tile.
_EPS = 1e-8


def tokens(features: torch.Tensor) -> torch.Tensor:
    """(K, h, w) feature map -> (hw, K) token matrix, row-major as `reshape` orders the grid."""
    return features.reshape(features.shape[0], -1).T


def joint_affinity(token_features: torch.Tensor, temperature: float, margin: float) -> torch.Tensor:
    """A_cd (eq. 11) of (n, K) tokens: sigmoid((cos - margin) / temperature), (n, n).

    `token_features` is F_cd's tokens (eq. 10: the concatenation of CLIP and DINO features, or
    a localizer's own features); centred and L2-normalised here (see the module docstring)."""
    centred = token_features - token_features.mean(dim=0, keepdim=True)
    unit = F.normalize(centred, dim=1, eps=_EPS)
    return torch.sigmoid((unit @ unit.T - margin) / temperature)


def attention_discrepancies(affinity: torch.Tensor, attentions: torch.Tensor) -> torch.Tensor:
    """S_l = sum_ij |A_cd(i, j) - A_s^l(i, j)| (eq. 12) for each of the (L, n, n) attention maps: (L,)."""
    return (affinity[None] - attentions).abs().sum(dim=(1, 2))


def reliable_attention_gate(discrepancies: torch.Tensor) -> torch.Tensor:
    """G_l (eq. 13): True where S_l is below the mean of S over the given layers N_0..N.

    The caller passes only layers N_0..N, so the mean 1/(N - N_0 + 1) sum S_l is a plain mean."""
    return discrepancies < discrepancies.mean()


def refining_map(affinity: torch.Tensor, attentions: torch.Tensor | None) -> torch.Tensor:
    """R (eq. 14) = A_cd ⊙ mean of the reliable attention maps; A_cd alone without attentions.

    If no map passes the gate (all S_l equal: the strict `<` keeps none), R falls back to A_cd
    and says so, rather than diffusing with an all-zero matrix."""
    if attentions is None or len(attentions) == 0:
        return affinity
    gate = reliable_attention_gate(attention_discrepancies(affinity, attentions))
    if not bool(gate.any()):
        logger.info("USR: no attention map below the mean discrepancy; refining with A_cd alone")
        return affinity
    return affinity * attentions[gate].mean(dim=0)


def diffusion_matrix(refining: torch.Tensor, alpha: int) -> torch.Tensor:
    """((R_nor + R_nor^T) / 2)^alpha of eq. 15, R_nor = R with columns then rows normalised to sum 1
    (as Ru et al. 2022, whom the paper follows); alpha an integer matrix power."""
    by_column = refining / (refining.sum(dim=0, keepdim=True) + _EPS)
    normalised = by_column / (by_column.sum(dim=1, keepdim=True) + _EPS)
    symmetric = (normalised + normalised.T) / 2
    return torch.linalg.matrix_power(symmetric, alpha)


def diffuse(cams: torch.Tensor, diffusion: torch.Tensor) -> torch.Tensor:
    """M_f = diffusion · M_init (eq. 15) for (C, n) flat CAMs: (C, n)."""
    # diffusion is symmetric, so (D · M_c^T)^T = M_c · D for every class at once.
    return cams @ diffusion


def argmax_regions(cams: torch.Tensor, background_score: float) -> torch.Tensor:
    """I_cam (eq. 16) of (C, n) CAMs with a constant background channel: (n,) int64, 0 = background,
    c + 1 = class c. The constant is the heatmap level below which a pixel is not a class seed
    region (1/2 = MIL's p 0.5); with one class, argmax(bg, c) is simply `cam > background_score`."""
    background = torch.full_like(cams[:1], background_score)
    return torch.cat([background, cams]).argmax(dim=0)


def seed_positions(cam: torch.Tensor, region: torch.Tensor, fraction: float) -> torch.Tensor:
    """Q_c (eq. 17): indices of the top `fraction` of the non-zero activations of the (n,) `cam`
    inside its argmax `region` (bool, n), at least one when there is any; ties broken by index."""
    candidates = torch.nonzero(region & (cam > 0)).flatten()
    if len(candidates) == 0:
        return candidates
    count = max(1, int(round(fraction * len(candidates))))
    # A stable sort on the negated values: equal activations keep index order (deterministic).
    order = torch.sort(-cam[candidates], stable=True).indices
    return candidates[order[:count]]


class MomentumPrototypes:
    """The VPE class prototypes P_c (eq. 18), one per class, updated by momentum.

    P_c <- tau P_c + (1 - tau) mean(seed features). The first update of a class sets P_c to the
    seeds' mean (a zero start would only shrink the first mean by 1 - tau: the same direction
    for the cosine of eq. 19, but a prototype that never reaches the scale of its features)."""

    def __init__(self, n_classes: int, momentum: float) -> None:
        self.momentum = momentum
        self.prototypes: list[torch.Tensor | None] = [None] * n_classes
        self.updates = [0] * n_classes

    def update(self, class_id: int, seed_features: torch.Tensor) -> None:
        """Fold the mean of (s, K) seed features into P_class_id (no-op for s = 0)."""
        if len(seed_features) == 0:
            return
        mean = seed_features.mean(dim=0)
        current = self.prototypes[class_id]
        self.prototypes[class_id] = mean if current is None else self.momentum * current + (1 - self.momentum) * mean
        self.updates[class_id] += 1

    def similarity(self, class_id: int, token_features: torch.Tensor) -> torch.Tensor:
        """S_c (eq. 19) = max(cos(P_c, f_i), 0) for (n, K) tokens: (n,)."""
        prototype = self.prototypes[class_id]
        if prototype is None:
            raise ValueError(f"class {class_id} has no prototype yet (no seeds updated it)")
        cosine = F.normalize(token_features, dim=1, eps=_EPS) @ F.normalize(prototype, dim=0, eps=_EPS)
        return cosine.clamp(min=0)


def prototype_cam(cam: torch.Tensor, similarity: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """M_c = Norm(M_f^c ⊙ S_c²) (eq. 20) of one class's (H, W) CAM and similarity, 0 outside `valid`.

    Norm: min-max over the valid part onto [0, max M_f^c] — the tile's own peak, not 1. The paper
    applies eq. 20 to images labelled with c; our CAMs also cover negative and unlabelled (test)
    tiles, where stretching to 1 would turn a faint response into a confident one."""
    product = cam * similarity.square()
    if not bool(valid.any()):
        return torch.zeros_like(cam)
    inside = product[valid]
    low, high = inside.min(), inside.max()
    peak = cam[valid].max()
    # A constant product has no range to stretch: it is kept as it is.
    scaled = (product - low) / (high - low) * peak if high > low else product
    return torch.where(valid, scaled, torch.zeros_like(scaled))
