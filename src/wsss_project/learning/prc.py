"""PRC's training objectives for both localizers: the image reconstruction (IR) loss and the
pixel relationship constraint (PRC) module (seed 004; the models are in models/reconstruction.py
and models/pixel_relation.py).

Parameters (`localization.ir_loss`, `localization.prc_module`; defaults in
conf/base/parameters_localization.yml, both off):

    ir_loss.weight           lambda_IR; 0 = off: no decoder is built and training is as before
    ir_loss.decoder_width    channels of the decoder's layers
    ir_loss.distance         l1 | mse between the reconstruction and the normalised input tile
    prc_module.enabled       build the PRC module into the localizer; its output CAM is refined
    prc_module.projection_dim, temperature, key_grid   the affinity (models/pixel_relation.py)
    prc_module.refined_loss_weight   weight of the classification loss on the pooled refined CAM
    prc_module.constraint_weight     weight of the raw-refined consistency term

The loss of one batch, for either localizer (`cam` = its per-position class map: pixel logits
for `mil`, the classic CAM for `cam_classifier`; `pool` = how that method makes tile logits):

    L = BCE(pool(cam), y)
      + refined_loss_weight * BCE(pool(A . cam), y)                      (PRC on)
      + constraint_weight   * mean |unit(cam) - stopgrad(unit(A . cam))| (PRC on)
      + weight              * distance(decoder(features), x)            (IR on)

Why these terms:
- The affinity A is trained only by the classification loss on the refined CAM: it must make
  A . cam classify the tile, i.e. gather the activation of a tile's object into the pooled
  evidence. The constraint is one-way (the refined map is the target, no gradient), so it pulls
  the raw CAM towards its propagated version (a pixel agrees with the pixels it resembles)
  without rewarding an A that copies the raw CAM (A -> identity would zero a two-way term).
- `unit` puts both maps on the heatmap's scale before they are compared: sigmoid for MIL's
  logits (its heatmap), ReLU / spatial peak for the CAM classifier (APSAM eq. 2, as SEAM
  compares CAMs), so the term does not grow with the scale of the logits.
- IR targets the normalised input the localizer was given (after augmentation, at full tile
  resolution): pixel-level supervision of the same features the CAM reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from wsss_project.models.pixel_relation import RelationSpec
from wsss_project.models.reconstruction import ReconstructionDecoder, upsamplings_for

IR_SECTION = "ir_loss"
PRC_SECTION = "prc_module"
IR_DISTANCES = ("l1", "mse")
_DISTANCES = {"l1": F.l1_loss, "mse": F.mse_loss}
# Numerical guard of the peak normalisation only (not a tunable): an all-zero map stays zero.
_PEAK_EPS = 1e-6

# History columns (and MLflow curves `localization.<name>`), present only when the term is on.
CLASSIFICATION_TERM = "classification_loss"
REFINED_TERM = "prc_refined_loss"
CONSTRAINT_TERM = "prc_constraint_loss"
IR_TERM = "ir_loss"


@dataclass(frozen=True)
class IrSettings:
    """`localization.ir_loss`."""

    weight: float
    decoder_width: int
    distance: str

    @property
    def enabled(self) -> bool:
        return self.weight > 0


@dataclass(frozen=True)
class PrcSettings:
    """`localization.prc_module`."""

    enabled: bool
    projection_dim: int
    temperature: float
    key_grid: int
    refined_loss_weight: float
    constraint_weight: float

    def spec(self) -> RelationSpec | None:
        """The module's architecture, or None when it is off."""
        if not self.enabled:
            return None
        return RelationSpec(self.projection_dim, self.temperature, self.key_grid)


def _section(params: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """`localization.<key>`, checked by the schema's model of it (every key, types, ranges)."""
    # Imported here: the schema imports the localizer registry, which imports this module.
    from wsss_project.validation.schema import check_section

    if key not in params:
        raise KeyError(f"missing parameter(s): localization.{key}")
    check_section(params[key], f"localization.{key}")
    return params[key]


def ir_settings(params: Mapping[str, Any]) -> IrSettings:
    """The IR loss settings of the `localization` parameters."""
    section = _section(params, IR_SECTION)
    return IrSettings(float(section["weight"]), int(section["decoder_width"]), str(section["distance"]))


def prc_settings(params: Mapping[str, Any]) -> PrcSettings:
    """The PRC module settings of the `localization` parameters."""
    section = _section(params, PRC_SECTION)
    return PrcSettings(
        enabled=bool(section["enabled"]),
        projection_dim=int(section["projection_dim"]),
        temperature=float(section["temperature"]),
        key_grid=int(section["key_grid"]),
        refined_loss_weight=float(section["refined_loss_weight"]),
        constraint_weight=float(section["constraint_weight"]),
    )


def relation_spec(params: Mapping[str, Any]) -> RelationSpec | None:
    """The PRC module to build into the localizer, or None when `prc_module.enabled` is false."""
    return prc_settings(params).spec()


def build_decoder(in_channels: int, feature_stride: float, ir: IrSettings) -> ReconstructionDecoder | None:
    """The IR decoder for features at `feature_stride` px of the tile, or None when the weight is 0."""
    if not ir.enabled:
        return None
    return ReconstructionDecoder(in_channels, ir.decoder_width, upsamplings_for(feature_stride))


def reconstruction_loss(
    decoder: ReconstructionDecoder, features: torch.Tensor, target: torch.Tensor, distance: str
) -> torch.Tensor:
    """distance(decoder(features), target) averaged over pixels and channels; target (B, 3, H, W)."""
    return _DISTANCES[distance](decoder(features, tuple(target.shape[-2:])), target)


def peak_normalised(cam: torch.Tensor) -> torch.Tensor:
    """ReLU(cam) / its spatial peak per map (B, C, h, w); an all-zero map stays zero."""
    cam = torch.relu(cam)
    peak = cam.amax(dim=(2, 3), keepdim=True)
    return torch.where(peak > _PEAK_EPS, cam / peak.clamp_min(_PEAK_EPS), torch.zeros_like(cam))


def constraint_loss(raw_unit: torch.Tensor, refined_unit: torch.Tensor) -> torch.Tensor:
    """mean |raw - stopgrad(refined)|: the raw map is pulled towards its propagated version only."""
    return (raw_unit - refined_unit.detach()).abs().mean()


class TermWindow:
    """Per-tile means of named loss terms over the batches since the last history record."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.seen = 0

    def add(self, terms: Mapping[str, torch.Tensor], n_tiles: int) -> None:
        for name, value in terms.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value.item()) * n_tiles
        self.seen += n_tiles

    def means(self) -> dict[str, float]:
        return {name: total / max(self.seen, 1) for name, total in self.sums.items()}


def prc_ir_losses(
    *,
    features: torch.Tensor,
    raw_cam: torch.Tensor | None,
    raw_loss: torch.Tensor,
    refine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
    classification_loss: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None,
    unit: Callable[[torch.Tensor], torch.Tensor],
    target: torch.Tensor,
    decoder: ReconstructionDecoder | None,
    prc: PrcSettings,
    ir: IrSettings,
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
    """The batch loss with the PRC and IR terms that are on (see the module docstring).

    Args:
        features: what the localizer's CAM reads (and the decoder reconstructs from).
        raw_cam: the per-position class map before refinement (needed only with PRC on).
        raw_loss: the classification loss of the raw map's tile logits (the method's own loss).
        refine: features, cam -> A . cam (the model's PRC module); needed only with PRC on.
        classification_loss: refined map -> (loss, tile logits), pooled as the method pools;
            needed only with PRC on.
        unit: map -> heatmap scale (sigmoid for MIL, peak_normalised for the CAM classifier).
        target: the normalised input tile (B, 3, H, W).

    Returns:
        The total loss, the refined tile logits (None without PRC) and every term for the history.
    """
    loss, refined_logits = raw_loss, None
    terms: dict[str, torch.Tensor] = {}
    if prc.enabled:
        refined = refine(features, raw_cam)
        refined_loss, refined_logits = classification_loss(refined)
        constraint = constraint_loss(unit(raw_cam), unit(refined))
        loss = loss + prc.refined_loss_weight * refined_loss + prc.constraint_weight * constraint
        terms[REFINED_TERM], terms[CONSTRAINT_TERM] = refined_loss.detach(), constraint.detach()
    if decoder is not None:
        ir_term = reconstruction_loss(decoder, features, target, ir.distance)
        loss = loss + ir.weight * ir_term
        terms[IR_TERM] = ir_term.detach()
    if terms:
        terms[CLASSIFICATION_TERM] = raw_loss.detach()
    return loss, refined_logits, terms
