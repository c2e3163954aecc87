"""Training the CAM classifier on image-level labels, and turning it into CAM heatmaps.

Every number comes from `params` (the `localization` parameters; defaults live in
conf/base/parameters_localization.yml). A missing key raises KeyError naming
`localization.<key>`.

Keys read by `train_cam_classifier` (and `build_cam_classifier`):
    seed (int)                  seeds torch/numpy and the generator that shuffles and augments
    epochs (int)                passes over the training tiles
    batch_size (int)            tiles per optimiser step
    lr (float)                  initial SGD learning rate (APSAM: 0.1)
    momentum (float)            SGD momentum (APSAM: 0.9)
    weight_decay (float)        SGD weight decay (APSAM: 1e-4)
    lr_step_size (int)          epochs between learning-rate decays (StepLR)
    lr_gamma (float)            learning-rate factor at each decay
    augment (bool)              random flips and 90-degree rotations
    pos_weight (null | "balanced" | float)
                                BCE positive weight; "balanced" = n_negative / n_positive per
                                class, from the training labels
    image_mean, image_std (3 floats, 0..1 scale)   input normalisation (ImageNet by default)
    base_width (int), blocks (4 ints), output_stride (8 | 16 | 32)   classifier architecture
    pretrained_backbone (null | path)   local torchvision ResNet state_dict; never downloaded

`backbone` (small | resnet18 | resnet34 | resnet50) picks the architecture; a
`pretrained_backbone` file must hold exactly that architecture's backbone tensors.

PRC's objectives `ir_loss` and `prc_module` (learning/prc.py; both off by default) apply here
too: the features are the backbone's last stage (at `output_stride`), the class map the classic
CAM, its tile logits the spatial mean + bias (= the GAP classifier's logits), and the PRC
constraint compares ReLU / peak of raw and refined CAM, the heatmap's own scale.

Keys read by `compute_cams` and `predict_tile_probabilities`:
    image_mean, image_std, tta_flips (bool: average over horizontal/vertical flips)

The shared tensor helpers below (normalisation, flips, optimiser step, deterministic mode) are
also used by mil_training and segmentation_training; batching and augmentation live in
learning/data.py.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from wsss_project.contracts import HEATMAP_MAX
from wsss_project.learning.data import (
    AugmentationPolicy,
    EpochBatchSampler,
    TileDataset,
    tile_loader,
)
from wsss_project.learning.prc import (
    IrSettings,
    PrcSettings,
    TermWindow,
    build_decoder,
    ir_settings,
    peak_normalised,
    prc_ir_losses,
    prc_settings,
    relation_spec,
)
from wsss_project.models.cam_classifier import CAMClassifier
from wsss_project.models.reconstruction import ReconstructionDecoder
from wsss_project.utils.seed import seed_everything

logger = logging.getLogger(__name__)

NAMESPACE = "localization"
CAM_TRAIN_KEYS = (
    "seed",
    "epochs",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "lr_step_size",
    "lr_gamma",
    "augment",
    "pos_weight",
    "image_mean",
    "image_std",
    "base_width",
    "blocks",
    "output_stride",
    "pretrained_backbone",
)
CAM_ARCH_KEYS = ("backbone", "base_width", "blocks", "output_stride", "pretrained_backbone")
CAM_INFER_KEYS = ("image_mean", "image_std", "tta_flips")

# Numerical guard only (not a tunable): a CAM whose peak is below this counts as all-zero.
_PEAK_EPS = 1e-6


# --------------------------------------------------------------------------- shared helpers


def require_params(params: Mapping[str, Any], keys: Sequence[str], namespace: str) -> None:
    """Raise KeyError naming `<namespace>.<key>` for every key missing from `params`."""
    missing = [f"{namespace}.{k}" for k in keys if k not in params]
    if missing:
        raise KeyError(f"missing parameter(s): {', '.join(missing)}")


def check_images(images: np.ndarray) -> None:
    """Images must be (N, H, W, 3) uint8."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}")


def images_to_tensor(
    images: np.ndarray, mean: Sequence[float], std: Sequence[float], device: torch.device
) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> normalised (B, 3, H, W) float32 on `device`."""
    # Move uint8 first: four times less host-to-device traffic than float32.
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return normalise(x.permute(0, 3, 1, 2), mean, std)


def normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> (x / 255 - mean) / std float32, in x's memory layout.

    Divides by 255 rather than using v2.ToDtype(scale=True), whose multiplication by 1/255
    differs in the last bit on 126 of the 256 levels (and so would change every figure).
    """
    x = x.float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def training_images(
    images: torch.Tensor, params: Mapping[str, Any], device: torch.device
) -> torch.Tensor:
    """A loader batch's (B, 3, H, W) uint8 images -> the model's normalised float32 input.

    Uses `image_mean`, `image_std` and `augment`. The memory layout is the one the hand-written
    loops gave the model (NHWC for whole batches, NCHW after per-sample augmentation): CPU
    convolutions differ in the last bits between layouts, and same-seed figures stay identical.
    """
    x = normalise(images.to(device), params["image_mean"], params["image_std"])
    layout = torch.contiguous_format if params["augment"] else torch.channels_last
    return x.contiguous(memory_format=layout)


def optimiser_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One gradient step on `loss`."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


FLIP_DIMS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


def flip_averaged(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tta: bool
) -> torch.Tensor:
    """fn(x), or the mean of flip^-1(fn(flip(x))) over the four flips when `tta`."""
    if not tta:
        return fn(x)
    total = None
    for dims in FLIP_DIMS:
        y = fn(torch.flip(x, dims)) if dims else fn(x)
        y = torch.flip(y, dims) if dims and y.ndim == 4 else y
        total = y if total is None else total + y
    return total / len(FLIP_DIMS)


@contextmanager
def deterministic_mode(device: torch.device) -> Iterator[None]:
    """Deterministic kernels while training; previous global settings restored afterwards.

    Strict on CPU (every op used has a deterministic kernel). On CUDA some kernels (e.g. the
    2-d NLL loss) have none, so there it only warns instead of failing the run.
    """
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic = previous[2]
        torch.backends.cudnn.benchmark = previous[3]


def progress(iterable: Sequence[Any], desc: str) -> Any:
    """tqdm over batches, silent when stderr is not a terminal (logs, CI)."""
    return tqdm(iterable, desc=desc, leave=False, disable=not sys.stderr.isatty())


# --------------------------------------------------------------------------- CAM classifier


def build_cam_classifier(
    n_classes: int, params: Mapping[str, Any], load_pretrained: bool = True
) -> CAMClassifier:
    """CAMClassifier from the architecture keys (`backbone`: small | resnet18 | resnet34 |
    resnet50; `base_width` and `blocks` size `small` only); `load_pretrained=False` when a
    trained state_dict will be loaded on top anyway, so `pretrained_backbone` is not read."""
    require_params(params, CAM_ARCH_KEYS, NAMESPACE)
    return CAMClassifier(
        n_classes=n_classes,
        base_width=int(params["base_width"]),
        blocks=tuple(int(b) for b in params["blocks"]),
        output_stride=int(params["output_stride"]),
        pretrained_backbone=params["pretrained_backbone"] if load_pretrained else None,
        backbone=str(params["backbone"]),
        relation=relation_spec(params),
    )


def bce_pos_weight(labels: np.ndarray, setting: Any, section: str = NAMESPACE) -> torch.Tensor | None:
    """BCE pos_weight from the `pos_weight` setting of `section` (shared with pixel MIL); the
    schema's rule for `<section>.pos_weight` (null, 'balanced' or a positive number) is checked."""
    # Imported here: the schema imports the localizer registry, which imports this module.
    from wsss_project.validation.schema import check_section

    check_section({"pos_weight": setting}, section, partial=True)
    if setting is None:
        return None
    if setting == "balanced":
        n_pos = labels.sum(axis=0).astype(np.float64)
        n_neg = labels.shape[0] - n_pos
        # A class with no positives or no negatives carries no balance information.
        weight = np.where((n_pos > 0) & (n_neg > 0), n_neg / np.maximum(n_pos, 1), 1.0)
        return torch.tensor(weight, dtype=torch.float32)
    return torch.full((labels.shape[1],), float(setting), dtype=torch.float32)


def train_cam_classifier(
    images: np.ndarray, labels: np.ndarray, params: Mapping[str, Any], device: torch.device
) -> tuple[CAMClassifier, list[dict[str, float]]]:
    """Train the CAM classifier with multi-label BCE and SGD + StepLR (APSAM's setup).

    Args:
        images: (N, H, W, 3) uint8 tiles.
        labels: (N, C) image-level 0/1 labels, one column per class.
        params: `localization` parameters (see module docstring).
        device: where to train.

    Returns:
        The trained model (on `device`, eval mode) and one history dict per epoch:
        epoch, loss, accuracy (per label, on the augmented training batches), lr, seconds.
    """
    require_params(params, CAM_TRAIN_KEYS, NAMESPACE)
    check_images(images)
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels must be (N, C) with N={images.shape[0]}, got {labels.shape}")

    seed = int(params["seed"])
    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)
    model = build_cam_classifier(labels.shape[1], params).to(device)
    prc, ir = prc_settings(params), ir_settings(params)
    decoder = build_decoder(model.n_features, float(model.output_stride), ir)
    if decoder is not None:
        decoder = decoder.to(device)
    criterion, optimizer, scheduler = _cam_optimisation(model, decoder, labels, params, device)
    policy = AugmentationPolicy(images.shape[1:3], dihedral=bool(params["augment"]))
    sampler = EpochBatchSampler(len(images), int(params["batch_size"]), generator, policy)
    loader = tile_loader(TileDataset(images, labels=labels), sampler, seed)
    logger.info(
        "Training CAM classifier on %d tiles %dx%d, %d classes (positives per class: %s), "
        "%d epochs, device %s; PRC module %s, IR loss weight %g",
        len(images),
        images.shape[1],
        images.shape[2],
        labels.shape[1],
        labels.sum(axis=0).astype(int).tolist(),
        int(params["epochs"]),
        device,
        "on" if prc.enabled else "off",
        ir.weight,
    )

    with deterministic_mode(device):
        objectives = _CamObjectives(decoder, prc, ir)
        history = _fit_cam(model, objectives, loader, criterion, optimizer, scheduler, params, device)
    model.eval()
    return model, history


def _fit_cam(
    model: CAMClassifier,
    objectives: _CamObjectives,
    loader: DataLoader,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    params: Mapping[str, Any],
    device: torch.device,
) -> list[dict[str, float]]:
    """`epochs` passes over the loader, the schedule stepped after each; one history record and
    log line (with rate) per epoch."""
    n_epochs, n_tiles = int(params["epochs"]), len(loader.dataset)
    history: list[dict[str, float]] = []
    for epoch in range(1, n_epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        loss, accuracy, terms = _train_cam_epoch(
            model, objectives, loader, criterion, optimizer, params, device, f"CAM epoch {epoch}/{n_epochs}"
        )
        scheduler.step()
        seconds = time.perf_counter() - start
        history.append(
            {"epoch": epoch, "loss": loss, "accuracy": accuracy, "lr": lr, "seconds": seconds, **terms}
        )
        logger.info(
            "CAM epoch %d/%d: loss %.4f, accuracy %.3f, lr %.3g, %.1f tiles/s",
            epoch,
            n_epochs,
            loss,
            accuracy,
            lr,
            n_tiles / max(seconds, 1e-9),
        )
    return history


def _cam_optimisation(
    model: CAMClassifier,
    decoder: ReconstructionDecoder | None,
    labels: np.ndarray,
    params: Mapping[str, Any],
    device: torch.device,
) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """BCE criterion (with `pos_weight`), SGD and its StepLR schedule (APSAM's setup); the IR
    decoder, when there is one, is optimised with the classifier."""
    pos_weight = bce_pos_weight(labels, params["pos_weight"])
    criterion = nn.BCEWithLogitsLoss(
        pos_weight=pos_weight.to(device) if pos_weight is not None else None
    )
    trainable = list(model.parameters()) + ([] if decoder is None else list(decoder.parameters()))
    optimizer = torch.optim.SGD(
        trainable,
        lr=float(params["lr"]),
        momentum=float(params["momentum"]),
        weight_decay=float(params["weight_decay"]),
    )
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=int(params["lr_step_size"]), gamma=float(params["lr_gamma"])
    )
    return criterion, optimizer, scheduler


@dataclass(frozen=True)
class _CamObjectives:
    """PRC's extra objectives of a run: the IR decoder (None when off) and both settings."""

    decoder: ReconstructionDecoder | None
    prc: PrcSettings
    ir: IrSettings


def _train_cam_epoch(
    model: CAMClassifier,
    objectives: _CamObjectives,
    loader: DataLoader,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    params: Mapping[str, Any],
    device: torch.device,
    desc: str,
) -> tuple[float, float, dict[str, float]]:
    """One pass over the loader; returns the mean loss per tile, the accuracy per label (of the
    refined logits with PRC) and the per-tile means of the PRC / IR terms that are on."""
    model.train()
    if objectives.decoder is not None:
        objectives.decoder.train()
    loss_sum, correct, n_tiles, n_labels = 0.0, 0, 0, 0
    terms_window = TermWindow()
    for batch in progress(loader, desc):
        x = training_images(batch["image"], params, device)
        y = batch["label"].to(device)
        loss, logits, terms = _cam_batch_loss(model, objectives, x, y, criterion)
        optimiser_step(optimizer, loss)
        loss_sum += loss.item() * len(y)
        correct += int(((logits > 0) == (y > 0.5)).sum().item())
        n_tiles, n_labels = n_tiles + len(y), n_labels + y.numel()
        terms_window.add(terms, len(y))
    return loss_sum / n_tiles, correct / n_labels, terms_window.means()


def _cam_batch_loss(
    model: CAMClassifier, objectives: _CamObjectives, x: torch.Tensor, y: torch.Tensor, criterion: nn.Module
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of a batch, its tile logits (refined with PRC) and its PRC / IR terms.

    With both off: BCE on the GAP classifier's logits, the same operations as `model(x)`.
    """
    features = model.features(x)
    raw_logits = model.head(features.mean(dim=(2, 3)))
    raw_loss = criterion(raw_logits, y)
    if not objectives.prc.enabled and objectives.decoder is None:
        return raw_loss, raw_logits, {}

    def classify(cam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The GAP classifier's logits are the spatial mean of its CAM plus the bias.
        logits = cam.mean(dim=(2, 3)) + model.head.bias
        return criterion(logits, y), logits

    raw_cam = model.raw_cams(features) if objectives.prc.enabled else None
    loss, refined_logits, terms = prc_ir_losses(
        features=features, raw_cam=raw_cam, raw_loss=raw_loss, refine=model.relation, classification_loss=classify,
        unit=peak_normalised, target=x, decoder=objectives.decoder, prc=objectives.prc, ir=objectives.ir,
    )
    return loss, (raw_logits if refined_logits is None else refined_logits), terms


def cams_to_uint8(
    raw: torch.Tensor, size: tuple[int, int], valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Raw CAMs (B, C, h, w) -> uint8 heatmaps (B, C, H, W), 0..255 (APSAM eqs. 1-2).

    ReLU, bilinear upsampling to the tile size, division by the per-map spatial maximum, x255.
    Normalising after upsampling makes every positive map reach exactly 255 (bilinear
    interpolation lowers the peak otherwise); an all-zero map stays zero.

    valid: optional (B, H, W) bool, the scene part of each tile. The reflected padding of a
    border tile is not scene: it is zeroed and the peak is taken over the scene part, in float
    before quantising (rescaling a quantised map would leave gaps of several levels).
    """
    cam = torch.relu(raw.float())
    cam = nn.functional.interpolate(cam, size=size, mode="bilinear", align_corners=False)
    cam = cam.clamp_min_(0.0)  # bilinear of non-negatives is non-negative; guard rounding
    if valid is not None:
        cam = cam * valid[:, None].to(device=cam.device, dtype=cam.dtype)
    peak = cam.amax(dim=(2, 3), keepdim=True)
    scaled = torch.where(peak > _PEAK_EPS, cam / peak.clamp_min(_PEAK_EPS), torch.zeros_like(cam))
    return torch.round(scaled * HEATMAP_MAX).clamp_(0, HEATMAP_MAX).to(torch.uint8)


def _batched(
    function: Callable[[torch.Tensor], torch.Tensor],
    images: np.ndarray,
    params: Mapping[str, Any],
    device: torch.device,
    batch_size: int,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Run `function` over normalised batches (flip-averaged if `tta_flips`); yield (start, out)."""
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            x = images_to_tensor(
                images[start : start + batch_size],
                params["image_mean"],
                params["image_std"],
                device,
            )
            yield start, flip_averaged(function, x, bool(params["tta_flips"]))


def compute_cams(
    model: CAMClassifier,
    images: np.ndarray,
    params: Mapping[str, Any],
    device: torch.device,
    batch_size: int,
    valid: torch.Tensor | None = None,
) -> np.ndarray:
    """CAM heatmap per tile and class: (N, C, H, W) uint8, the H(x, y) of APSAM eq. 2.

    valid: optional (N, H, W) bool scene part of each tile (see `cams_to_uint8`).
    """
    require_params(params, CAM_INFER_KEYS, NAMESPACE)
    check_images(images)
    n, h, w = images.shape[:3]
    out = np.zeros((n, model.n_classes, h, w), dtype=np.uint8)
    model.eval()
    for start, raw in _batched(model.cams, images, params, device, batch_size):
        part = None if valid is None else valid[start : start + len(raw)]
        out[start : start + len(raw)] = cams_to_uint8(raw, (h, w), part).cpu().numpy()
    return out


def predict_tile_probabilities(
    model: CAMClassifier,
    images: np.ndarray,
    params: Mapping[str, Any],
    device: torch.device,
    batch_size: int,
) -> np.ndarray:
    """Classifier probability per tile and class: (N, C) float32 (sigmoid of the logits)."""
    require_params(params, CAM_INFER_KEYS, NAMESPACE)
    check_images(images)
    out = np.zeros((images.shape[0], model.n_classes), dtype=np.float32)
    model.eval()
    for start, probs in _batched(lambda t: torch.sigmoid(model(t)), images, params, device, batch_size):
        out[start : start + len(probs)] = probs.float().cpu().numpy()
    return out
