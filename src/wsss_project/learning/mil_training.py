"""Training the pixel-MIL scorer on image-level tile labels, and turning it into heatmaps.

Every number comes from the `localization` parameters (`localization.mil.*` for the scorer;
defaults in conf/base/parameters_localization.yml). A missing key raises KeyError naming it.

Keys of `localization.mil` read here:
    width, n_layers          scorer architecture (receptive field 1 + 2 n_layers px)
    input_scale              tiles are resized by this factor before scoring (1.0 = full
                             resolution; 0.5 = 4x cheaper, receptive field 2x wider in scene px)
    pooling                  topk | lse: how pixel logits become the tile logit
    topk_fraction            topk: share of a tile's valid pixels whose logits are averaged
    lse_r                    lse: sharpness r of the log-sum-exp
    steps, batch_size        optimiser steps and tiles per step
    max_passes               at most this many passes over the training tiles: a small tile set
                             stops earlier (the cost of a run follows min(steps, passes x tiles))
    lr, weight_decay         AdamW
    warmup_fraction          share of the steps spent on a linear warm-up, then cosine decay to
                             zero (stable across seeds)
    pos_weight               null | balanced | number: BCE positive weight
    log_every                steps between history records (loss, accuracy, lr, rate)
Shared `localization` keys: seed, augment, image_mean, image_std, tta_flips, and the PRC
objectives `ir_loss` and `prc_module` (learning/prc.py; both off by default). For MIL the
features are the scorer's hidden layer (at `input_scale`), the class map its pixel logits, and
the PRC constraint compares sigmoid(raw) with sigmoid(refined), the heatmap's own scale.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from wsss_project.contracts import HEATMAP_MAX
from wsss_project.learning.cam_training import (
    bce_pos_weight,
    check_images,
    deterministic_mode,
    flip_averaged,
    images_to_tensor,
    optimiser_step,
    require_params,
    training_images,
)
from wsss_project.learning.data import (
    AugmentationPolicy,
    StepBatchSampler,
    TileDataset,
    tile_loader,
)
from wsss_project.learning.prc import (
    IrSettings,
    PrcSettings,
    TermWindow,
    build_decoder,
    ir_settings,
    prc_ir_losses,
    prc_settings,
)
from wsss_project.models.pixel_mil import PixelMIL, mil_pool
from wsss_project.models.pixel_relation import RelationSpec
from wsss_project.models.reconstruction import ReconstructionDecoder
from wsss_project.utils.seed import seed_everything

logger = logging.getLogger(__name__)

NAMESPACE = "localization.mil"
MIL_ARCH_KEYS = ("width", "n_layers", "input_scale")
MIL_TRAIN_KEYS = (
    *MIL_ARCH_KEYS, "pooling", "topk_fraction", "lse_r", "steps", "max_passes", "batch_size", "lr",
    "weight_decay", "warmup_fraction", "pos_weight", "log_every",
)
SHARED_TRAIN_KEYS = ("seed", "augment", "image_mean", "image_std")
SHARED_INFER_KEYS = ("image_mean", "image_std", "tta_flips")


def build_pixel_mil(n_classes: int, mil: Mapping[str, Any], relation: RelationSpec | None = None) -> PixelMIL:
    """PixelMIL from `localization.mil` (also used to rebuild a saved state_dict), with the PRC
    module `relation` (`relation_spec(localization)`) when it is enabled."""
    require_params(mil, MIL_ARCH_KEYS, NAMESPACE)
    return PixelMIL(n_classes, width=int(mil["width"]), n_layers=int(mil["n_layers"]), relation=relation)


def check_mil_params(mil: Mapping[str, Any]) -> None:
    """Fail on values that would silently do something else than asked (the schema's `Mil` rules).

    A missing key is a KeyError naming it, as everywhere in this module.
    """
    # Imported here: the schema imports the localizer registry, which imports this module.
    from wsss_project.validation.schema import check_section

    require_params(mil, MIL_TRAIN_KEYS, NAMESPACE)
    check_section(mil, NAMESPACE)


def effective_steps(mil: Mapping[str, Any], n_tiles: int) -> int:
    """min(steps, ceil(max_passes x n_tiles / batch_size)): small tile sets are not over-trained."""
    passes_cap = math.ceil(float(mil["max_passes"]) * n_tiles / int(mil["batch_size"]))
    return max(1, min(int(mil["steps"]), passes_cap))


def valid_masks(valid_sizes: np.ndarray, height: int, width: int) -> torch.Tensor:
    """(N, H, W) bool: True inside each tile's scene part (rows < height_i, cols < width_i)."""
    rows = torch.arange(height)[None, :, None]
    cols = torch.arange(width)[None, None, :]
    sizes = torch.as_tensor(np.asarray(valid_sizes), dtype=torch.long)
    return (rows < sizes[:, 0, None, None]) & (cols < sizes[:, 1, None, None])


def _rescale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Resize images by `scale` (area averaging when shrinking: no aliasing), channels-last.

    Channels-last makes the narrow 3x3 convolutions of the scorer about 1.5x faster on a CPU.
    """
    x = x if scale == 1.0 else F.interpolate(x, scale_factor=scale, mode="area")
    return x.contiguous(memory_format=torch.channels_last)


def _rescale_valid(valid: torch.Tensor, scale: float) -> torch.Tensor:
    if scale == 1.0:
        return valid
    return F.interpolate(valid[:, None].float(), scale_factor=scale, mode="nearest")[:, 0] > 0.5


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to zero at `total`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress_ = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * progress_))


def train_pixel_mil(
    images: np.ndarray,
    labels: np.ndarray,
    valid_sizes: np.ndarray,
    params: Mapping[str, Any],
    device: torch.device,
) -> tuple[PixelMIL, list[dict[str, float]]]:
    """Train PixelMIL with BCE on tile labels pooled from pixel logits (positives and negatives).

    Args:
        images: (N, H, W, 3) uint8 tiles.
        labels: (N, C) image-level 0/1 labels.
        valid_sizes: (N, 2) valid (height, width) of each tile; the rest is padding.
        params: `localization` parameters, with the scorer's under `mil`.
        device: where to train.

    Returns:
        The trained model (eval mode) and one history record every `log_every` steps.
    """
    require_params(params, (*SHARED_TRAIN_KEYS, "mil"), "localization")
    mil = params["mil"]
    check_mil_params(mil)
    check_images(images)
    labels = np.asarray(labels, dtype=np.float32)
    if labels.ndim != 2 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels must be (N, C) with N={images.shape[0]}, got {labels.shape}")

    seed = int(params["seed"])
    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)
    prc, ir = prc_settings(params), ir_settings(params)
    model = build_pixel_mil(labels.shape[1], mil, prc.spec()).to(device, memory_format=torch.channels_last)
    # The hidden features are at 1 / input_scale px of the tile; the decoder brings them back.
    decoder = build_decoder(int(mil["width"]), 1.0 / float(mil["input_scale"]), ir)
    trainable = list(model.parameters())
    if decoder is not None:
        decoder = decoder.to(device)
        trainable += list(decoder.parameters())
    pos_weight = bce_pos_weight(labels, mil["pos_weight"], NAMESPACE)
    optimizer = torch.optim.AdamW(trainable, lr=float(mil["lr"]), weight_decay=float(mil["weight_decay"]))
    batch = int(mil["batch_size"])
    steps = effective_steps(mil, images.shape[0])
    warmup = int(float(mil["warmup_fraction"]) * steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, steps))
    n, h, w = images.shape[:3]
    policy = AugmentationPolicy((h, w), dihedral=bool(params["augment"]))
    dataset = TileDataset(images, valid=valid_masks(valid_sizes, h, w), labels=labels)
    loader = tile_loader(dataset, StepBatchSampler(n, batch, steps, generator, policy), seed)
    logger.info(
        "Training pixel MIL (receptive field %d px at scale %.2f, %s pooling) on %d tiles, "
        "positives per class %s, %d steps of %d, device %s; PRC module %s, IR loss weight %g",
        model.receptive_field, float(mil["input_scale"]), mil["pooling"], n, labels.sum(axis=0).astype(int).tolist(),
        steps, batch, device, "on" if prc.enabled else "off", ir.weight,
    )
    criterion = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight.to(device) if pos_weight is not None else None)
    with deterministic_mode(device):
        model.train()
        if decoder is not None:
            decoder.train()
        objectives = _Objectives(decoder, prc, ir)
        history = _run_mil_steps(model, objectives, loader, criterion, optimizer, scheduler, params, device)
    model.eval()
    return model, history


@dataclass(frozen=True)
class _Objectives:
    """PRC's extra objectives of a run: the IR decoder (None when off) and both settings."""

    decoder: ReconstructionDecoder | None
    prc: PrcSettings
    ir: IrSettings


class _Window:
    """Loss, accuracy, rate and the PRC / IR loss terms (when on) since the last history record."""

    def __init__(self) -> None:
        self.loss_sum = self.correct = self.seen = 0.0
        self.terms = TermWindow()
        self.started = time.perf_counter()

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, terms: Mapping[str, torch.Tensor]) -> None:
        self.loss_sum += loss.item() * len(y)
        self.correct += float(((logits > 0) == (y > 0.5)).float().sum().item())
        self.seen += len(y)
        self.terms.add(terms, len(y))

    def record(self, step: int, n_classes: int, lr: float) -> dict[str, float]:
        seconds = time.perf_counter() - self.started
        return {
            "step": step, "loss": self.loss_sum / self.seen, "accuracy": self.correct / (self.seen * n_classes),
            "lr": lr, "tiles_per_s": self.seen / max(seconds, 1e-9), **self.terms.means(),
        }


def _run_mil_steps(
    model: PixelMIL,
    objectives: _Objectives,
    loader: DataLoader,
    criterion: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    params: Mapping[str, Any],
    device: torch.device,
) -> list[dict[str, float]]:
    """Every step of the loader; one history record (and log line) every `log_every` steps."""
    mil = params["mil"]
    steps, log_every = len(loader), int(mil["log_every"])
    history: list[dict[str, float]] = []
    window = _Window()
    for step, batch in enumerate(loader, start=1):
        y = batch["label"].to(device)
        loss, logits, terms = _mil_batch_loss(model, objectives, batch, y, criterion, params, device)
        optimiser_step(optimizer, loss)
        scheduler.step()
        window.add(loss, logits, y, terms)
        if step % log_every == 0 or step == steps:
            record = window.record(step, y.shape[1], optimizer.param_groups[0]["lr"])
            history.append(record)
            logger.info(
                "MIL step %d/%d: loss %.4f, accuracy %.3f, lr %.2g, %.1f tiles/s",
                step, steps, record["loss"], record["accuracy"], record["lr"], record["tiles_per_s"],
            )
            window = _Window()
    return history


def _mil_batch_loss(
    model: PixelMIL,
    objectives: _Objectives,
    batch: Mapping[str, torch.Tensor],
    y: torch.Tensor,
    criterion: torch.nn.Module,
    params: Mapping[str, Any],
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of a loader batch, its tile logits (B, C) (refined with PRC) and its loss terms.

    Tile logits are pixel logits pooled over each tile's scene part; with PRC and IR off this is
    BCE on them alone, computed by the same operations as before those existed.
    """
    mil = params["mil"]
    scale = float(mil["input_scale"])
    x = training_images(batch["image"], params, device)
    valid = _rescale_valid(batch["valid"].to(device), scale)

    def pool(pixel_logits: torch.Tensor) -> torch.Tensor:
        return mil_pool(pixel_logits, valid, mil["pooling"], float(mil["topk_fraction"]), float(mil["lse_r"]))

    def classify(pixel_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = pool(pixel_logits)
        return criterion(logits, y), logits

    features = model.features(_rescale(x, scale))
    raw = model.classifier(features)
    raw_loss, raw_logits = classify(raw)
    loss, refined_logits, terms = prc_ir_losses(
        features=features, raw_cam=raw, raw_loss=raw_loss, refine=model.relation, classification_loss=classify,
        unit=torch.sigmoid, target=x, decoder=objectives.decoder, prc=objectives.prc, ir=objectives.ir,
    )
    return loss, (raw_logits if refined_logits is None else refined_logits), terms


def mil_probabilities(
    model: PixelMIL, images: np.ndarray, params: Mapping[str, Any], device: torch.device
) -> torch.Tensor:
    """Pixel probabilities (N, C, H, W) float32 at tile resolution (flip-averaged if `tta_flips`)."""
    require_params(params, SHARED_INFER_KEYS, "localization")
    check_images(images)
    scale = float(params["mil"]["input_scale"])
    h, w = images.shape[1:3]
    model.eval()
    with torch.inference_mode():
        x = images_to_tensor(images, params["image_mean"], params["image_std"], device)
        logits = flip_averaged(lambda t: model(_rescale(t, scale)), x, bool(params["tta_flips"]))
        if scale != 1.0:
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return torch.sigmoid(logits.float()).cpu()


def mil_tile_probabilities(
    model: PixelMIL, images: np.ndarray, valid_sizes: np.ndarray, params: Mapping[str, Any], device: torch.device
) -> np.ndarray:
    """Tile probability per class (N, C), pooled exactly as in training (over valid pixels)."""
    mil = params["mil"]
    scale = float(mil["input_scale"])
    check_images(images)
    model.eval()
    with torch.inference_mode():
        x = images_to_tensor(images, params["image_mean"], params["image_std"], device)
        valid = _rescale_valid(valid_masks(valid_sizes, *images.shape[1:3]).to(device), scale)
        logits = mil_pool(model(_rescale(x, scale)), valid, mil["pooling"], float(mil["topk_fraction"]),
                          float(mil["lse_r"]))
        return torch.sigmoid(logits.float()).cpu().numpy()


def probabilities_to_heatmap(probabilities: torch.Tensor | np.ndarray) -> np.ndarray:
    """sigmoid probabilities -> uint8 heatmap 0..255 (T = 128 means p > 0.5)."""
    p = np.asarray(probabilities, dtype=np.float32)
    return np.round(np.clip(p, 0.0, 1.0) * HEATMAP_MAX).astype(np.uint8)
