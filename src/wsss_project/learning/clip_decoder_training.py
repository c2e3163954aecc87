"""Training the CLIP adapter + decoder (models/clip_decoder.py) on (pseudo-)masks, and predicting with it.

Seed 003, §3.3 and §3.6: the CLIP image encoder stays frozen; only the adapter and decoder learn, with
L = seg_weight * L_seg + aff_weight * L_aff (eq. 21):
- L_seg: cross-entropy over the pixels whose label is not 255 (the ResUNet's `segmentation_loss`
  without its Dice term);
- L_aff (Ru et al. 2022, AFA): the last decoder block's head-averaged pre-softmax attention scores S,
  symmetrised and squashed, A = sigmoid((S + S^T) / 2), supervised by the label affinity at the token
  grid: a pair of tokens with the same label is positive (A -> 1), with different labels negative
  (A -> 0); a pair with an ignored token is left out. L_aff = 0.5 mean_pos(1 - A) + 0.5 mean_neg(A),
  pooled over the batch (AFA's form; an empty set adds 0). Every pair is used (the diagonal too).
- Token labels: each token's cell of the tile (adaptive pooling bounds) takes its most frequent
  value, 255 counted as a value (so a mostly ignored cell is ignored); ties go to the smaller value,
  i.e. a class wins a tie with 255. Majority rather than nearest, so one stray pixel at a cell's
  centre does not label the whole cell.

The frozen features of every training tile are computed once per run (`features_fn`, no_grad) and
kept in memory as `feature_cache_dtype`; no augmentation: the adapter is per-location and the decoder
has no positional embedding, so a flip of the cached features and labels would give exactly the
flipped outputs (nothing new to learn), and the features of a flipped image are not a flip of the
features. The optimiser is AdamW with a polynomial learning-rate decay per step (the paper's: lr
2e-3, weight decay 1e-3; the power is not given there, 0.9 is the usual one); the shipped values are
in conf/base/parameters_segmentation_training.yml.

Keys read from the `segmentation_training.clip_decoder` section: see CLIP_DECODER_KEYS.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from wsss_project.contracts import IGNORE_INDEX
from wsss_project.errors import UserInputError
from wsss_project.learning.cam_training import (
    FLIP_DIMS,
    check_images,
    deterministic_mode,
    optimiser_step,
    progress,
    require_params,
)
from wsss_project.learning.segmentation_training import segmentation_loss
from wsss_project.models.clip_decoder import ClipDecoder, ClipDecoderOutput
from wsss_project.utils.fingerprint import checkpoint_fingerprint
from wsss_project.utils.seed import seed_everything

logger = logging.getLogger(__name__)

SECTION = "segmentation_training.clip_decoder"
# Which CLIP blocks feed the adapter: this word, or a list of block numbers counted from 1.
ALL_BLOCKS = "all"
# How the cached frozen features are held in memory (float16 halves a run's footprint).
CACHE_DTYPES = MappingProxyType({"float16": torch.float16, "float32": torch.float32})
CLIP_DECODER_ARCH_KEYS = ("adapter_dim", "decoder_dim", "decoder_depth", "decoder_heads", "mlp_ratio")
CLIP_DECODER_KEYS = (
    "blocks", "image_size", *CLIP_DECODER_ARCH_KEYS, "seg_weight", "aff_weight", "lr", "weight_decay",
    "poly_power", "epochs", "batch_size", "feature_batch_size", "feature_cache_dtype",
)
# The shipped `segmentation_training.clip_decoder` (conf/base/parameters_segmentation_training.yml, which a test
# keeps equal to this): with model: resunet nothing reads the section, so the schema refuses a value that differs
# from these (a changed setting that would do nothing). The nodes read the yml's values, never these.
CLIP_DECODER_DEFAULTS = MappingProxyType({
    "blocks": ALL_BLOCKS, "image_size": None, "adapter_dim": 256, "decoder_dim": 256, "decoder_depth": 3,
    "decoder_heads": 8, "mlp_ratio": 4.0, "seg_weight": 1.0, "aff_weight": 0.1, "lr": 2.0e-3, "weight_decay": 1.0e-3,
    "poly_power": 0.9, "epochs": 10, "batch_size": 4, "feature_batch_size": 8, "feature_cache_dtype": "float16",
})
# The CLIP this segmenter runs on: the text_prototype_kb pipeline's (one checkpoint for the whole method).
CLIP_CHECKPOINT_PARAM = "text_prototype_kb.clip.checkpoint"
CLIP_FINGERPRINT_KIND = "clip"  # the model_type salt of utils/fingerprint.checkpoint_fingerprint
# What a saved decoder must find again at prediction (its extra state also records the model_name).
BACKBONE_MATCH_KEYS = ("checkpoint_sha256", "blocks", "image_size")

# images (B, H, W, 3) uint8 -> the chosen CLIP blocks' maps, each (B, width, h, w), computed without grad.
FeatureFn = Callable[[np.ndarray], list[torch.Tensor]]


def select_blocks(setting: Any, n_layers: int) -> list[int]:
    """The 0-based indices of the CLIP blocks named by `clip_decoder.blocks` (`all`, or numbers from 1)."""
    if setting == ALL_BLOCKS:
        return list(range(n_layers))
    blocks = list(setting)
    bad = [b for b in blocks if not isinstance(b, int) or not 1 <= b <= n_layers]
    if not blocks or bad or len(set(blocks)) != len(blocks):
        raise UserInputError(
            f"parameter `{SECTION}.blocks` must be {ALL_BLOCKS!r} or distinct block numbers 1..{n_layers} "
            f"(the CLIP has {n_layers} blocks), got {setting!r}"
        )
    return [b - 1 for b in blocks]


@dataclass(frozen=True)
class FrozenClip:
    """The loaded frozen CLIP, the blocks that feed the adapter, and what identifies them in a saved model."""

    bundle: Any  # foundation.clip.ClipBundle
    block_indices: list[int]  # 0-based
    image_size: int
    backbone: dict[str, Any]  # model_name, checkpoint_sha256, blocks (from 1), image_size

    def features_fn(self, batch_size: int) -> FeatureFn:
        """The chosen blocks' maps of a batch of tiles (resized to image_size), computed without grad."""
        # Imported here: open_clip takes seconds to import, and the schema imports this module.
        from wsss_project.foundation.clip import clip_image_features

        def features(images: np.ndarray) -> list[torch.Tensor]:
            with torch.no_grad():
                out = clip_image_features(self.bundle, images, batch_size, self.image_size,
                                          with_patch_tokens=False, with_block_outputs=True)
            return [out.block_outputs[i] for i in self.block_indices]

        return features


def load_frozen_clip(
    text_prototype_kb: Mapping[str, Any] | None, params: Mapping[str, Any], device: torch.device,
) -> FrozenClip:
    """The frozen CLIP of `text_prototype_kb.clip` and the blocks of `params` (the clip_decoder section).

    Raises UserInputError naming text_prototype_kb.clip.checkpoint when it is not set.
    """
    # Imported here: open_clip takes seconds to import, and the schema imports this module.
    from wsss_project.foundation.clip import load_clip

    clip = (text_prototype_kb or {}).get("clip") or {}
    if clip.get("checkpoint") is None:
        raise UserInputError(
            f"parameter `{CLIP_CHECKPOINT_PARAM}` must be set when segmentation_training.model is clip_decoder "
            "(the adapter and decoder run on that frozen CLIP; a local file, nothing is downloaded)"
        )
    bundle = load_clip(clip["model_name"], clip["checkpoint"], device)
    block_indices = select_blocks(params["blocks"], bundle.n_layers)
    image_size = bundle.image_size if params["image_size"] is None else int(params["image_size"])
    if image_size % bundle.patch_size:
        raise UserInputError(
            f"parameter `{SECTION}.image_size` ({image_size}) must be a multiple of the CLIP patch size "
            f"{bundle.patch_size}"
        )
    backbone = {
        "model_name": str(clip["model_name"]),
        # The weights' content identifies the CLIP (model_name may be a config path that moves).
        "checkpoint_sha256": checkpoint_fingerprint(clip["checkpoint"], CLIP_FINGERPRINT_KIND),
        "blocks": [i + 1 for i in block_indices],
        "image_size": image_size,
    }
    return FrozenClip(bundle, block_indices, image_size, backbone)


def check_same_backbone(saved: Mapping[str, Any], frozen: FrozenClip) -> None:
    """A saved decoder runs only on the CLIP, blocks and input size it was trained with."""
    differing = [k for k in BACKBONE_MATCH_KEYS if saved.get(k) != frozen.backbone[k]]
    if differing:
        raise UserInputError(
            f"segmentation_model was trained on the CLIP {dict(saved)} but the parameters give "
            f"{frozen.backbone} (differing: {differing}): set `{CLIP_CHECKPOINT_PARAM}`, "
            f"`{SECTION}.blocks` and `{SECTION}.image_size` as in training, or train again"
        )


def build_clip_decoder(
    in_dim: int, n_blocks: int, n_outputs: int, params: Mapping[str, Any], backbone: Mapping[str, Any] | None = None,
) -> ClipDecoder:
    """The adapter + decoder from the architecture keys of `params` (the clip_decoder section)."""
    require_params(params, CLIP_DECODER_ARCH_KEYS, SECTION)
    return ClipDecoder(
        in_dim=in_dim, n_blocks=n_blocks, n_outputs=n_outputs, adapter_dim=int(params["adapter_dim"]),
        decoder_dim=int(params["decoder_dim"]), depth=int(params["decoder_depth"]),
        heads=int(params["decoder_heads"]), mlp_ratio=float(params["mlp_ratio"]), backbone=backbone,
    )


def token_labels(masks: torch.Tensor, grid: tuple[int, int], n_outputs: int) -> torch.Tensor:
    """(N, H, W) class indices with 255 = ignore -> (N, h*w): each token cell's most frequent value.

    255 counts as a value; ties go to the smaller value (a class before 255). See the module docstring.
    """
    ignore_slot = n_outputs  # 255 takes the slot after the classes, so ties favour a class
    slots = torch.where(masks == IGNORE_INDEX, ignore_slot, masks.long())
    onehot = F.one_hot(slots, n_outputs + 1).permute(0, 3, 1, 2).float()
    shares = F.adaptive_avg_pool2d(onehot, grid)  # per-cell share of each value
    labels = shares.argmax(dim=1).flatten(1)  # argmax returns the first maximum: the smaller value
    return torch.where(labels == ignore_slot, IGNORE_INDEX, labels)


def affinity_loss(attention_scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_aff (AFA) of (N, T, T) attention scores against (N, T) token labels (255 = ignore).

    A = sigmoid((S + S^T) / 2); 0.5 * mean over same-label pairs of (1 - A) + 0.5 * mean over
    different-label pairs of A; pairs with an ignored token are left out; an empty set adds 0.
    """
    if attention_scores.shape[:2] != labels.shape or attention_scores.shape[1] != attention_scores.shape[2]:
        raise ValueError(f"scores {tuple(attention_scores.shape)} do not match labels {tuple(labels.shape)}")
    affinity = torch.sigmoid((attention_scores + attention_scores.transpose(1, 2)) / 2)
    valid = labels != IGNORE_INDEX
    pairs = valid[:, :, None] & valid[:, None, :]
    same = labels[:, :, None] == labels[:, None, :]
    positive, negative = (pairs & same).to(affinity.dtype), (pairs & ~same).to(affinity.dtype)
    positive_loss = (positive * (1 - affinity)).sum() / positive.sum().clamp_min(1)
    negative_loss = (negative * affinity).sum() / negative.sum().clamp_min(1)
    return 0.5 * positive_loss + 0.5 * negative_loss


def combined_loss(
    output: ClipDecoderOutput, masks: torch.Tensor, seg_weight: float, aff_weight: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 21: (seg_weight * L_seg + aff_weight * L_aff, L_seg, L_aff) of a decoder output on (N, H, W) masks."""
    seg = segmentation_loss(output.logits, masks, dice_weight=0.0)
    aff = affinity_loss(output.attention_scores, token_labels(masks, output.grid, output.logits.shape[1]))
    return seg_weight * seg + aff_weight * aff, seg, aff


def cache_features(features_fn: FeatureFn, images: np.ndarray, batch_size: int, dtype: torch.dtype) -> torch.Tensor:
    """The chosen blocks' frozen features of every tile, (N, n_blocks, width, h, w) on the CPU as `dtype`.

    Computed once per training run, `batch_size` tiles per forward pass, with a progress log (tiles/s).
    """
    check_images(images)
    started, parts = time.perf_counter(), []
    for start in progress(range(0, len(images), batch_size), "CLIP features"):
        with torch.no_grad():
            blocks = features_fn(images[start : start + batch_size])
        parts.append(torch.stack([b.detach().to("cpu", dtype) for b in blocks], dim=1))
    cache = torch.cat(parts)
    seconds = time.perf_counter() - started
    logger.info(
        "Cached frozen CLIP features of %d tiles (%d blocks, %s, %.0f MB) in %.1f s (%.2f tiles/s)",
        len(images), cache.shape[1], tuple(cache.shape[2:]), cache.numel() * cache.element_size() / 2**20,
        seconds, len(images) / max(seconds, 1e-9),
    )
    return cache


def train_clip_decoder(
    features_fn: FeatureFn,
    images: np.ndarray,
    masks: np.ndarray,
    n_outputs: int,
    params: Mapping[str, Any],
    seed: int,
    device: torch.device,
    backbone: Mapping[str, Any] | None = None,
) -> tuple[ClipDecoder, list[dict[str, float]]]:
    """Train the adapter + decoder on frozen CLIP features with eq. 21's loss.

    Args:
        features_fn: the frozen CLIP's chosen block maps of a batch of tiles (see FeatureFn).
        images: (N, H, W, 3) uint8 tiles.
        masks: (N, H, W) uint8 class indices, 255 = ignore.
        n_outputs: background + classes.
        params: the `segmentation_training.clip_decoder` section (CLIP_DECODER_KEYS).
        seed: the run's seed (initial weights, batch order).
        device: where the decoder trains.
        backbone: which CLIP the features come from, saved with the weights.

    Returns:
        The trained decoder (on `device`, eval mode) and one history dict per epoch:
        epoch, loss, seg_loss, aff_loss, lr, seconds.
    """
    require_params(params, CLIP_DECODER_KEYS, SECTION)
    if masks.shape != images.shape[:3] or masks.dtype != np.uint8:
        raise ValueError(f"masks must be (N, H, W) uint8 matching images {images.shape[:3]}, got {masks.shape} {masks.dtype}")
    cache = cache_features(features_fn, images, int(params["feature_batch_size"]),
                           CACHE_DTYPES[params["feature_cache_dtype"]])
    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)
    model = build_clip_decoder(cache.shape[2], cache.shape[1], n_outputs, params, backbone).to(device)
    n_epochs, batch_size = int(params["epochs"]), int(params["batch_size"])
    steps_per_epoch = -(-len(images) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(params["lr"]), weight_decay=float(params["weight_decay"]))
    schedule = torch.optim.lr_scheduler.PolynomialLR(
        optimizer, total_iters=n_epochs * steps_per_epoch, power=float(params["poly_power"])
    )
    labels = torch.from_numpy(masks)
    logger.info(
        "Training the CLIP adapter + decoder (%d trainable parameters) on %d tiles, %d outputs, %d epochs, device %s",
        sum(p.numel() for p in model.parameters()), len(images), n_outputs, n_epochs, device,
    )
    history: list[dict[str, float]] = []
    with deterministic_mode(device):
        for epoch in range(1, n_epochs + 1):
            started = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            sums = _train_epoch(model, cache, labels, torch.randperm(len(images), generator=generator),
                                (optimizer, schedule), params, device, f"CLIP decoder epoch {epoch}/{n_epochs}")
            seconds = time.perf_counter() - started
            record = {"epoch": epoch, **{k: v / len(images) for k, v in sums.items()}, "lr": lr, "seconds": seconds}
            history.append(record)
            logger.info("CLIP decoder epoch %d/%d: loss %.4f (seg %.4f, aff %.4f), %.1f tiles/s", epoch, n_epochs,
                        record["loss"], record["seg_loss"], record["aff_loss"], len(images) / max(seconds, 1e-9))
    model.eval()
    return model, history


def _train_epoch(
    model: ClipDecoder, cache: torch.Tensor, labels: torch.Tensor, order: torch.Tensor,
    optimisation: tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler],
    params: Mapping[str, Any], device: torch.device, desc: str,
) -> dict[str, float]:
    """One pass over the cached tiles in `order`; returns the loss sums (times tiles) of the epoch."""
    optimizer, schedule = optimisation
    seg_weight, aff_weight = float(params["seg_weight"]), float(params["aff_weight"])
    size = tuple(labels.shape[-2:])
    model.train()
    sums = {"loss": 0.0, "seg_loss": 0.0, "aff_loss": 0.0}
    for batch in progress(order.split(int(params["batch_size"])), desc):
        features = cache[batch].to(device=device, dtype=torch.float32)
        target = labels[batch].to(device).long()
        output = model(list(features.unbind(dim=1)), size)
        loss, seg, aff = combined_loss(output, target, seg_weight, aff_weight)
        optimiser_step(optimizer, loss)
        schedule.step()
        for name, value in (("loss", loss), ("seg_loss", seg), ("aff_loss", aff)):
            sums[name] += value.item() * len(batch)
    return sums


def predict_clip_probabilities(
    model: ClipDecoder, features_fn: FeatureFn, images: np.ndarray, batch_size: int, tta_flips: bool,
) -> np.ndarray:
    """Softmax probabilities (N, n_outputs, H, W) float32 of whole tiles, `batch_size` tiles at a time.

    tta_flips: the mean over the four flips of the image (CLIP sees each flipped image; the
    probabilities are flipped back), as the ResUNet's `tta_flips`.
    """
    check_images(images)
    n, h, w, _ = images.shape
    out = np.empty((n, model.n_outputs, h, w), dtype=np.float32)
    device = next(model.parameters()).device
    flips = FLIP_DIMS if tta_flips else FLIP_DIMS[:1]
    model.eval()
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            batch = images[start : start + batch_size]
            total = None
            for dims in flips:
                # image axes of (B, H, W, 3) for the flip dims of (B, C, H, W): -1 -> 2 (W), -2 -> 1 (H)
                flipped = np.flip(batch, axis=tuple(d + 3 for d in dims)) if dims else batch
                features = [f.to(device=device, dtype=torch.float32) for f in features_fn(np.ascontiguousarray(flipped))]
                probs = model(features, (h, w)).logits.softmax(dim=1)
                probs = torch.flip(probs, dims) if dims else probs
                total = probs if total is None else total + probs
            out[start : start + len(batch)] = (total / len(flips)).float().cpu().numpy()
    return out
