"""Training ResUNet on (pseudo-)masks and predicting per-pixel class probabilities.

Every number comes from `params` (the `segmentation_training` parameters). A missing key raises
KeyError naming `segmentation_training.<key>`.

Keys read by `train_resunet` (and `build_resunet`):
    seed (int), epochs (int), batch_size (int)
    optimizer ("adam" | "adamw"), lr (float), weight_decay (float)
    dice_weight (float)         weight of the soft-Dice term added to cross-entropy (0 = off)
    augment (bool)              random flips/90-degree rotations, same op on image and mask
    crop_size (null | int)      random square crops for training (cheaper on CPU); must be
                                divisible by 2**depth; null = whole tiles
    image_mean, image_std (3 floats, 0..1 scale)
    base_width (int), depth (int)   ResUNet architecture

Keys read by `predict_probabilities`: image_mean, image_std, tta_flips (bool).

`pretrain_resunet` (ALPS, `pretrain: alps`) trains the same ResUNet with an `alps.n_clusters`-way
head on the cluster maps (learning/alps.py) for `alps.epochs` epochs, cross-entropy only; its body
(every layer but the output conv) then initialises `train_resunet(..., body=...)`.

Masks are uint8 class indices, 255 = ignore: ignored pixels contribute neither loss nor gradient.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from wsss_project.contracts import IGNORE_INDEX
from wsss_project.errors import UserInputError
from wsss_project.learning.cam_training import (
    check_images,
    deterministic_mode,
    flip_averaged,
    images_to_tensor,
    optimiser_step,
    progress,
    require_params,
    training_images,
)
from wsss_project.learning.data import (
    AugmentationPolicy,
    EpochBatchSampler,
    TileDataset,
    tile_loader,
)
from wsss_project.models.resunet import ResUNet
from wsss_project.utils.seed import seed_everything

logger = logging.getLogger(__name__)

NAMESPACE = "segmentation_training"
# `segmentation_training.model`: the segmenter trained on the (pseudo-)masks. clip_decoder's training and
# inference live in learning/clip_decoder_training.py.
RESUNET = "resunet"
CLIP_DECODER = "clip_decoder"
SEGMENTATION_MODELS = (RESUNET, CLIP_DECODER)
# The shipped values of the `segmentation_training` keys only the ResUNet reads (conf/base/
# parameters_segmentation_training.yml, which a test keeps equal to this): with model: clip_decoder the
# schema refuses a value that differs from these (a changed setting that would do nothing; clip_decoder
# has its own epochs, lr, batch_size, ... in its section). The nodes read the yml's values, never these.
RESUNET_ONLY_DEFAULTS = MappingProxyType({
    "base_width": 16, "depth": 4, "epochs": 10, "batch_size": 8, "optimizer": "adamw", "lr": 1.0e-3,
    "weight_decay": 1.0e-4, "dice_weight": 0.0, "augment": True, "crop_size": 128,
    "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
})
# The `optimizer` choices (the parameter schema offers these names).
OPTIMIZERS = MappingProxyType({"adam": torch.optim.Adam, "adamw": torch.optim.AdamW})
SEG_TRAIN_KEYS = (
    "seed",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "weight_decay",
    "dice_weight",
    "augment",
    "crop_size",
    "image_mean",
    "image_std",
    "base_width",
    "depth",
)
SEG_ARCH_KEYS = ("base_width", "depth")
SEG_INFER_KEYS = ("image_mean", "image_std", "tta_flips")

# Laplace smoothing of the soft Dice: keeps it defined (=1) for classes absent from a batch.
_DICE_SMOOTH = 1.0


def build_resunet(n_outputs: int, params: Mapping[str, Any]) -> ResUNet:
    """ResUNet from the architecture keys (also used to rebuild a saved state_dict)."""
    require_params(params, SEG_ARCH_KEYS, NAMESPACE)
    return ResUNet(
        in_channels=3,
        n_outputs=n_outputs,
        base_width=int(params["base_width"]),
        depth=int(params["depth"]),
    )


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, dice_weight: float
) -> torch.Tensor:
    """Cross-entropy (+ dice_weight x soft Dice) over the pixels whose target is not 255.

    Averaged over valid pixels; a batch with no valid pixel gives 0 (not NaN) and no gradient.
    """
    valid = target != IGNORE_INDEX
    n_valid = valid.sum().clamp_min(1)
    loss = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum") / n_valid
    if dice_weight > 0:
        n_classes = logits.shape[1]
        mask = valid.unsqueeze(1).to(logits.dtype)
        probs = logits.softmax(dim=1) * mask
        onehot = F.one_hot(torch.where(valid, target, 0), n_classes).permute(0, 3, 1, 2)
        onehot = onehot.to(logits.dtype) * mask
        inter = (probs * onehot).sum(dim=(0, 2, 3))
        denom = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
        dice = (2 * inter + _DICE_SMOOTH) / (denom + _DICE_SMOOTH)
        loss = loss + dice_weight * (1 - dice.mean())
    return loss


def _check_masks(masks: np.ndarray, images: np.ndarray, n_outputs: int) -> None:
    if masks.shape != images.shape[:3] or masks.dtype != np.uint8:
        raise ValueError(
            f"masks must be (N, H, W) uint8 matching images {images.shape[:3]}, "
            f"got {masks.shape} {masks.dtype}"
        )
    bad = np.setdiff1d(np.unique(masks), [*range(n_outputs), IGNORE_INDEX])
    if bad.size:
        raise ValueError(
            f"mask values {bad.tolist()} are neither a class index < {n_outputs} nor 255"
        )


def _make_optimizer(model: nn.Module, params: Mapping[str, Any]) -> torch.optim.Optimizer:
    name = params["optimizer"]
    if name not in OPTIMIZERS:
        raise UserInputError(f"parameter `{NAMESPACE}.optimizer` must be one of {list(OPTIMIZERS)}, got {name!r}")
    return OPTIMIZERS[name](
        model.parameters(), lr=float(params["lr"]), weight_decay=float(params["weight_decay"])
    )


def train_resunet(
    images: np.ndarray,
    masks: np.ndarray,
    n_outputs: int,
    params: Mapping[str, Any],
    device: torch.device,
    body: Mapping[str, torch.Tensor] | None = None,
) -> tuple[ResUNet, list[dict[str, float]]]:
    """Train ResUNet with cross-entropy (ignore 255) + optional soft Dice.

    Args:
        images: (N, H, W, 3) uint8 tiles.
        masks: (N, H, W) uint8 class indices, 255 = ignore.
        n_outputs: number of classes including background.
        params: `segmentation_training` parameters (see module docstring).
        device: where to train.
        body: optional pre-trained body (`ResUNet.body_state_dict` of `pretrain_resunet`'s model):
            copied in after the seeded initialisation, so the output layer keeps its seeded
            random weights and the rest of the run draws the same random numbers as without it.

    Returns:
        The trained model (on `device`, eval mode) and one history dict per epoch:
        epoch, loss, lr, seconds.
    """
    require_params(params, SEG_TRAIN_KEYS, NAMESPACE)
    check_images(images)
    _check_masks(masks, images, n_outputs)
    factor = 2 ** int(params["depth"])
    crop = params["crop_size"]
    n, h, w = masks.shape
    use_crop = crop is not None and int(crop) < min(h, w)
    train_h, train_w = (int(crop), int(crop)) if use_crop else (h, w)
    if train_h % factor or train_w % factor:
        raise UserInputError(
            f"training size {train_h}x{train_w} (crop_size={crop}) is not divisible by "
            f"2**depth={factor}"
        )

    seed = int(params["seed"])
    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)
    model = build_resunet(n_outputs, params)
    if body:
        model.load_body(dict(body))
        logger.info("ResUNet starts from the pre-trained body (%d tensors); its %d-way output layer is new",
                    len(body), n_outputs)
    model = model.to(device)
    optimizer = _make_optimizer(model, params)
    crop_size = train_h if use_crop else None
    policy = AugmentationPolicy((h, w), crop_size, dihedral=bool(params["augment"]))
    sampler = EpochBatchSampler(n, int(params["batch_size"]), generator, policy)
    loader = tile_loader(TileDataset(images, masks=masks), sampler, seed)
    _log_training_start(masks, n_outputs, crop_size, params, device)
    with deterministic_mode(device):
        history = _fit_resunet(model, loader, optimizer, params, device)
    model.eval()
    return model, history


def pretrain_resunet(
    images: np.ndarray,
    cluster_maps: np.ndarray,
    params: Mapping[str, Any],
    device: torch.device,
) -> tuple[ResUNet, list[dict[str, float]]]:
    """ALPS pre-training: ResUNet with an `alps.n_clusters`-way head on the cluster maps (255 = ignore).

    The fine-tuning schedule's optimiser, batch, crops and augmentation, for `alps.epochs` epochs and
    with cross-entropy only (`dice_weight` 0): ALPS pre-trains with the segmenter's own pixel loss,
    and a soft Dice over up to 255 mostly tiny clusters would weigh each as much as the largest.
    """
    alps = params["alps"]
    return train_resunet(
        images, cluster_maps, int(alps["n_clusters"]),
        {**params, "epochs": int(alps["epochs"]), "dice_weight": 0.0}, device,
    )


def _log_training_start(
    masks: np.ndarray,
    n_outputs: int,
    crop_size: int | None,
    params: Mapping[str, Any],
    device: torch.device,
) -> None:
    n, h, w = masks.shape
    logger.info(
        "Training ResUNet on %d tiles %dx%d (%s), %d outputs, %.1f%% labelled pixels, "
        "%d epochs, device %s",
        n,
        h,
        w,
        f"{crop_size}px crops" if crop_size is not None else "whole tiles",
        n_outputs,
        100 * float((masks != IGNORE_INDEX).mean()),
        int(params["epochs"]),
        device,
    )


def _fit_resunet(
    model: ResUNet,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    params: Mapping[str, Any],
    device: torch.device,
) -> list[dict[str, float]]:
    """`epochs` passes over the loader; one history record and log line (with rate) per epoch."""
    n_epochs, n_tiles = int(params["epochs"]), len(loader.dataset)
    history: list[dict[str, float]] = []
    for epoch in range(1, n_epochs + 1):
        start = time.perf_counter()
        loss = _train_resunet_epoch(
            model, loader, optimizer, params, device, f"ResUNet epoch {epoch}/{n_epochs}"
        )
        seconds = time.perf_counter() - start
        lr = optimizer.param_groups[0]["lr"]
        history.append({"epoch": epoch, "loss": loss, "lr": lr, "seconds": seconds})
        logger.info(
            "ResUNet epoch %d/%d: loss %.4f, %.1f tiles/s",
            epoch,
            n_epochs,
            loss,
            n_tiles / max(seconds, 1e-9),
        )
    return history


def _train_resunet_epoch(
    model: ResUNet,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    params: Mapping[str, Any],
    device: torch.device,
    desc: str,
) -> float:
    """One pass over the loader; returns the mean loss per tile."""
    model.train()
    dice_weight = float(params["dice_weight"])
    loss_sum, n_tiles = 0.0, 0
    for batch in progress(loader, desc):
        x = training_images(batch["image"], params, device)
        y = batch["mask"].to(device).long()
        loss = segmentation_loss(model(x), y, dice_weight)
        optimiser_step(optimizer, loss)
        loss_sum += loss.item() * len(y)
        n_tiles += len(y)
    return loss_sum / n_tiles


def predict_probabilities(
    model: ResUNet,
    images: np.ndarray,
    params: Mapping[str, Any],
    device: torch.device,
    batch_size: int,
) -> np.ndarray:
    """Softmax probabilities (N, n_outputs, H, W) float32, one batch on the device at a time.

    Tiles whose size is not divisible by 2**depth are edge-padded and cropped back.
    """
    require_params(params, SEG_INFER_KEYS, NAMESPACE)
    check_images(images)
    n, h, w, _ = images.shape
    factor = 2**model.depth
    pad_h, pad_w = (-h) % factor, (-w) % factor
    out = np.empty((n, model.n_outputs, h, w), dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            x = images_to_tensor(
                images[start : start + batch_size],
                params["image_mean"],
                params["image_std"],
                device,
            )
            if pad_h or pad_w:
                x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
            probs = flip_averaged(lambda t: model(t).softmax(dim=1), x, bool(params["tta_flips"]))
            out[start : start + len(x)] = probs[:, :, :h, :w].float().cpu().numpy()
    return out
