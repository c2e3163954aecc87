"""Training tiles as a torch `Dataset`, batches from one seeded generator, augmentation as
torchvision v2 transforms.

Reproducibility contract: every random number of a training run comes from ONE explicit
`torch.Generator` seeded with the run's `seed`, drawn by the batch sampler in the main process
in this order (the order of the hand-written loops these classes replaced, so that figures did
not move):

1. at the start of each pass over the tiles, `torch.randperm(n)`: the order of that pass;
2. for each batch of B tiles, whole-batch draws: crop tops `randint(0, H - size + 1, (B,))` and
   crop lefts `randint(0, W - size + 1, (B,))` (when cropping), then quarter turns
   `randint(0, 4, (B,))` (0 or 2 on non-square samples) and horizontal flips `randint(0, 2, (B,))`
   (when augmenting).

The Dataset and the v2 transform only apply what the sampler drew, so loading draws nothing:
`num_workers` changes no number. torchvision's stock random transforms (v2.RandomCrop, ...) draw
one sample at a time from the global RNG, which would change every figure; they are not used.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as tvf

QUARTER_TURN_DEGREES = 90.0
QUARTER_TURNS = 4  # 0, 90, 180, 270 degrees


@dataclass(frozen=True)
class Augmentation:
    """One sample's drawn augmentation: a crop window, then quarter turns, then a flip.

    crop: (top, left, size) of a square window, or None for the whole tile.
    """

    crop: tuple[int, int, int] | None = None
    quarter_turns: int = 0
    hflip: bool = False


@dataclass(frozen=True)
class SampleKey:
    """What the batch sampler hands the Dataset: a tile index and that tile's augmentation."""

    index: int
    augmentation: Augmentation = Augmentation()


@dataclass(frozen=True)
class AugmentationPolicy:
    """What the batch sampler draws for each batch (step 2 of the module's contract).

    tile_size: (H, W) of the tiles; crop_size: side of random square crops (None = whole tiles);
    dihedral: random quarter turns and horizontal flips.
    """

    tile_size: tuple[int, int]
    crop_size: int | None = None
    dihedral: bool = False

    def draw(self, batch_size: int, generator: torch.Generator) -> list[Augmentation]:
        """One Augmentation per sample of a batch, drawn as whole-batch tensors."""
        height, width = self.tile_size
        crops: list[tuple[int, int, int] | None] = [None] * batch_size
        if self.crop_size is not None:
            size = self.crop_size
            tops = torch.randint(0, height - size + 1, (batch_size,), generator=generator).tolist()
            lefts = torch.randint(0, width - size + 1, (batch_size,), generator=generator).tolist()
            crops = [(top, left, size) for top, left in zip(tops, lefts, strict=True)]
            height = width = size
        if not self.dihedral:
            return [Augmentation(crop) for crop in crops]
        turns = torch.randint(0, QUARTER_TURNS, (batch_size,), generator=generator)
        if height != width:
            turns = (turns // 2) * 2  # 0 or 180 degrees keep a non-square sample's shape
        flips = torch.randint(0, 2, (batch_size,), generator=generator)
        return [
            Augmentation(crop, int(turn), bool(flip))
            for crop, turn, flip in zip(crops, turns, flips, strict=True)
        ]


class _SeededBatchSampler(Sampler[list[SampleKey]]):
    """Batches of SampleKeys; tile orders and augmentations drawn from `generator`."""

    def __init__(
        self, n_tiles: int, batch_size: int, generator: torch.Generator, policy: AugmentationPolicy
    ) -> None:
        if n_tiles < 1 or batch_size < 1:
            raise ValueError(f"need n_tiles >= 1 and batch_size >= 1, got {n_tiles}, {batch_size}")
        self.n_tiles, self.batch_size = n_tiles, batch_size
        self.generator, self.policy = generator, policy

    def _permutation(self) -> list[int]:
        return torch.randperm(self.n_tiles, generator=self.generator).tolist()

    def _keys(self, indices: Sequence[int]) -> list[SampleKey]:
        augmentations = self.policy.draw(len(indices), self.generator)
        return [SampleKey(i, a) for i, a in zip(indices, augmentations, strict=True)]


class EpochBatchSampler(_SeededBatchSampler):
    """One pass over the tiles per iteration: a new permutation cut into batches (the last one
    may be short)."""

    def __len__(self) -> int:
        return math.ceil(self.n_tiles / self.batch_size)

    def __iter__(self) -> Iterator[list[SampleKey]]:
        order = self._permutation()
        for start in range(0, self.n_tiles, self.batch_size):
            yield self._keys(order[start : start + self.batch_size])


class StepBatchSampler(_SeededBatchSampler):
    """`steps` batches of `batch_size` tiles; a new permutation starts whenever the rest of the
    current one cannot fill a batch (that rest is skipped; fewer tiles than a batch: all of them)."""

    def __init__(
        self,
        n_tiles: int,
        batch_size: int,
        steps: int,
        generator: torch.Generator,
        policy: AugmentationPolicy,
    ) -> None:
        super().__init__(n_tiles, batch_size, generator, policy)
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[SampleKey]]:
        order, cursor = self._permutation(), 0
        for _ in range(self.steps):
            if cursor + self.batch_size > self.n_tiles:
                order, cursor = self._permutation(), 0
            yield self._keys(order[cursor : cursor + self.batch_size])
            cursor += self.batch_size


class TileAugment(v2.Transform):
    """A drawn Augmentation as a v2 transform: v2's crop, rotate (exact quarter turns: rot90) and
    horizontal-flip kernels, applied jointly to the Image and every Mask of a sample; pure
    tensors (labels) pass through."""

    def __init__(self, augmentation: Augmentation) -> None:
        super().__init__()
        self.augmentation = augmentation

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        # Drawn by the batch sampler for the whole batch (the module's contract), not here.
        return {"augmentation": self.augmentation}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        augmentation: Augmentation = params["augmentation"]
        if augmentation.crop is not None:
            top, left, size = augmentation.crop
            inpt = self._call_kernel(tvf.crop, inpt, top=top, left=left, height=size, width=size)
        if augmentation.quarter_turns:
            angle = QUARTER_TURN_DEGREES * augmentation.quarter_turns
            inpt = self._call_kernel(tvf.rotate, inpt, angle=angle, expand=True)
        if augmentation.hflip:
            inpt = self._call_kernel(tvf.horizontal_flip, inpt)
        return inpt


def _as_tensor(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A tensor sharing memory with `array` when it is writable (torch warns on read-only arrays)."""
    if isinstance(array, torch.Tensor):
        return array
    array = np.asarray(array)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


class TileDataset(Dataset[dict[str, torch.Tensor]]):
    """Tiles as samples, indexed by SampleKey; each key's augmentation applied by TileAugment.

    A sample holds `image`: Image (3, H, W) uint8, and of the fields given: `mask`: Mask (H, W)
    uint8 class indices, `valid`: Mask (H, W) bool scene part, `label`: (C,) float32.

    Args:
        images: (N, H, W, 3) uint8 tiles.
        masks: optional (N, H, W) uint8 class-index masks.
        valid: optional (N, H, W) bool, the scene part of each tile.
        labels: optional (N, C) image-level labels.
    """

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray | None = None,
        valid: torch.Tensor | None = None,
        labels: np.ndarray | None = None,
    ) -> None:
        self.images = _as_tensor(images)
        self.masks = None if masks is None else _as_tensor(masks)
        self.valid = None if valid is None else _as_tensor(valid)
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.float32)
        for name, field in (("masks", self.masks), ("valid", self.valid), ("labels", self.labels)):
            if field is not None and len(field) != len(self.images):
                raise ValueError(f"{name} has {len(field)} rows for {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: SampleKey) -> dict[str, torch.Tensor]:
        i = key.index
        sample: dict[str, torch.Tensor] = {"image": tv_tensors.Image(self.images[i].permute(2, 0, 1))}
        if self.masks is not None:
            sample["mask"] = tv_tensors.Mask(self.masks[i])
        if self.valid is not None:
            sample["valid"] = tv_tensors.Mask(self.valid[i])
        if self.labels is not None:
            sample["label"] = self.labels[i]
        return TileAugment(key.augmentation)(sample)


def tile_loader(
    dataset: TileDataset, batch_sampler: Sampler[list[SampleKey]], seed: int, num_workers: int = 0
) -> DataLoader:
    """DataLoader over `dataset` in the batches of `batch_sampler`, collated into stacked tensors.

    Each new iteration of a DataLoader draws a base seed for its workers; a generator of its own
    keeps that draw off the global torch RNG, which later nodes of the same run may use.
    """
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )
