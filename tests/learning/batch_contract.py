"""The batch contract of learning/data.py written out the way the hand-written training loops
did it before the Dataset/DataLoader (numpy crops of whole batches, torch.rot90/flip per sample
on the normalised batch): the oracle the loaders and the training loops are checked against.

Every draw comes from one generator, in the contract's order: a permutation per pass, then per
batch crop tops, crop lefts, quarter turns, flips.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from wsss_project.learning.cam_training import images_to_tensor

CPU = torch.device("cpu")


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[np.ndarray]:
    """One pass: a permutation cut into batches, the last one possibly short."""
    order = torch.randperm(n, generator=generator).numpy()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def step_batches(n: int, batch_size: int, steps: int, generator: torch.Generator) -> Iterator[np.ndarray]:
    """`steps` full batches; a new permutation when the rest of the current one is too short.

    A generator, so that its permutations interleave with the augmentation draws of each batch.
    """
    order, cursor = torch.randperm(n, generator=generator), 0
    for _ in range(steps):
        if cursor + batch_size > n:
            order, cursor = torch.randperm(n, generator=generator), 0
        yield order[cursor : cursor + batch_size].numpy()
        cursor += batch_size


def crops(images: np.ndarray, masks: np.ndarray, size: int, generator: torch.Generator):
    """One random size x size window per sample: tops for the batch, then lefts."""
    n, h, w = images.shape[:3]
    rows = torch.randint(0, h - size + 1, (n,), generator=generator).tolist()
    cols = torch.randint(0, w - size + 1, (n,), generator=generator).tolist()
    cut = lambda a: np.stack([a[i, r : r + size, c : c + size] for i, (r, c) in enumerate(zip(rows, cols, strict=False))])  # noqa: E731
    return cut(images), cut(masks)


def dihedral_ops(n: int, square: bool, generator: torch.Generator) -> list[tuple[int, bool]]:
    """Quarter turns for the batch (0 or 2 when not square), then flips."""
    rots = torch.randint(0, 4, (n,), generator=generator)
    if not square:
        rots = (rots // 2) * 2
    flips = torch.randint(0, 2, (n,), generator=generator)
    return [(int(r), bool(f)) for r, f in zip(rots, flips, strict=False)]


def apply_ops(x: torch.Tensor, ops: list[tuple[int, bool]]) -> torch.Tensor:
    """rot90 then horizontal flip, per sample of a batch (N, ..., H, W), stacked."""
    out = []
    for xi, (rot, flip) in zip(x, ops, strict=False):
        xi = torch.rot90(xi, rot, dims=(-2, -1)) if rot else xi
        out.append(torch.flip(xi, dims=(-1,)) if flip else xi)
    return torch.stack(out)


def model_batches(
    index_batches: Iterator[np.ndarray],
    images: np.ndarray,
    params: Mapping[str, Any],
    generator: torch.Generator,
    masks: np.ndarray | None = None,
    crop_size: int | None = None,
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor | None]]:
    """(indices, normalised model input, augmented masks) per batch, as the old loops made them."""
    for idx in index_batches:
        img = images[idx]
        msk = None if masks is None else masks[idx]
        if crop_size is not None:
            img, msk = crops(img, msk, crop_size, generator)
        x = images_to_tensor(img, params["image_mean"], params["image_std"], CPU)
        y = None if msk is None else torch.from_numpy(np.ascontiguousarray(msk))
        if params["augment"]:
            ops = dihedral_ops(len(idx), img.shape[1] == img.shape[2], generator)
            x = apply_ops(x, ops)
            y = None if y is None else apply_ops(y, ops)
        yield idx, x, y
