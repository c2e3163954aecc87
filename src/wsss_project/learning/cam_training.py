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

Keys read by `compute_cams` and `predict_tile_probabilities`:
    image_mean, image_std, tta_flips (bool: average over horizontal/vertical flips)

The shared tensor helpers below (normalisation, flips, batching, deterministic mode) are also
used by segmentation_training.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from wsss_project.errors import UserInputError
from wsss_project.models.cam_classifier import CAMClassifier
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
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def batch_indices(
    n: int, batch_size: int, generator: torch.Generator | None = None
) -> list[np.ndarray]:
    """Index batches over n items; shuffled by `generator` when given."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    order_np = order.numpy()
    return [order_np[i : i + batch_size] for i in range(0, n, batch_size)]


def dihedral(x: torch.Tensor, rot: int, flip: bool) -> torch.Tensor:
    """Rotate the last two dims by rot*90 degrees, then flip horizontally if asked."""
    if rot:
        x = torch.rot90(x, rot, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x


def random_dihedral_params(
    n: int, square: bool, generator: torch.Generator
) -> list[tuple[int, bool]]:
    """One random (rotation, flip) per sample; odd rotations only for square inputs."""
    rots = torch.randint(0, 4, (n,), generator=generator)
    if not square:
        rots = (rots // 2) * 2  # 0 or 180 degrees keep the shape
    flips = torch.randint(0, 2, (n,), generator=generator)
    return [(int(r), bool(f)) for r, f in zip(rots, flips, strict=True)]


def apply_per_sample(x: torch.Tensor, ops: Sequence[tuple[int, bool]]) -> torch.Tensor:
    """Apply one dihedral op per sample of a batch (N, ..., H, W)."""
    return torch.stack([dihedral(xi, r, f) for xi, (r, f) in zip(x, ops, strict=True)])


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
    )


def bce_pos_weight(
    labels: np.ndarray, setting: Any, parameter: str = f"{NAMESPACE}.pos_weight"
) -> torch.Tensor | None:
    """BCE pos_weight from a `pos_weight` setting; errors name `parameter` (shared with pixel MIL)."""
    if setting is None:
        return None
    if setting == "balanced":
        n_pos = labels.sum(axis=0).astype(np.float64)
        n_neg = labels.shape[0] - n_pos
        # A class with no positives or no negatives carries no balance information.
        weight = np.where((n_pos > 0) & (n_neg > 0), n_neg / np.maximum(n_pos, 1), 1.0)
        return torch.tensor(weight, dtype=torch.float32)
    if isinstance(setting, int | float) and not isinstance(setting, bool) and setting > 0:
        return torch.full((labels.shape[1],), float(setting), dtype=torch.float32)
    raise UserInputError(
        f"{parameter} must be null, 'balanced' or a positive number, got {setting!r}"
    )


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

    seed_everything(int(params["seed"]))
    generator = torch.Generator().manual_seed(int(params["seed"]))
    model = build_cam_classifier(labels.shape[1], params).to(device)
    pos_weight = bce_pos_weight(labels, params["pos_weight"])
    criterion = nn.BCEWithLogitsLoss(
        pos_weight=pos_weight.to(device) if pos_weight is not None else None
    )
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=float(params["lr"]),
        momentum=float(params["momentum"]),
        weight_decay=float(params["weight_decay"]),
    )
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=int(params["lr_step_size"]), gamma=float(params["lr_gamma"])
    )
    targets = torch.as_tensor(labels, dtype=torch.float32)
    square = images.shape[1] == images.shape[2]
    n_epochs, n = int(params["epochs"]), images.shape[0]
    logger.info(
        "Training CAM classifier on %d tiles %dx%d, %d classes (positives per class: %s), "
        "%d epochs, device %s",
        n,
        images.shape[1],
        images.shape[2],
        labels.shape[1],
        labels.sum(axis=0).astype(int).tolist(),
        n_epochs,
        device,
    )

    history: list[dict[str, float]] = []
    with deterministic_mode(device):
        for epoch in range(1, n_epochs + 1):
            model.train()
            start = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            loss_sum, correct = 0.0, 0
            batches = batch_indices(n, int(params["batch_size"]), generator)
            for idx in progress(batches, f"CAM epoch {epoch}/{n_epochs}"):
                x = images_to_tensor(images[idx], params["image_mean"], params["image_std"], device)
                if params["augment"]:
                    x = apply_per_sample(x, random_dihedral_params(len(idx), square, generator))
                y = targets[idx].to(device)
                logits = model(x)
                loss = criterion(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * len(idx)
                correct += int(((logits > 0) == (y > 0.5)).sum().item())
            scheduler.step()
            seconds = time.perf_counter() - start
            record = {
                "epoch": epoch,
                "loss": loss_sum / n,
                "accuracy": correct / (n * labels.shape[1]),
                "lr": lr,
                "seconds": seconds,
            }
            history.append(record)
            logger.info(
                "CAM epoch %d/%d: loss %.4f, accuracy %.3f, lr %.3g, %.1f tiles/s",
                epoch,
                n_epochs,
                record["loss"],
                record["accuracy"],
                lr,
                n / max(seconds, 1e-9),
            )
    model.eval()
    return model, history


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
    return torch.round(scaled * 255.0).clamp_(0, 255).to(torch.uint8)


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
