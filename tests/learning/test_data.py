"""Tile Dataset, seeded batch samplers and v2 augmentation: the loaders yield exactly the batches
of the reproducibility contract (tests/learning/batch_contract.py), in its order."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from batch_contract import epoch_batches, model_batches, step_batches
from torchvision import tv_tensors

from wsss_project.learning.cam_training import training_images
from wsss_project.learning.data import (
    Augmentation,
    AugmentationPolicy,
    EpochBatchSampler,
    SampleKey,
    StepBatchSampler,
    TileDataset,
    tile_loader,
)

CPU = torch.device("cpu")
NORM = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


def _tiles(n: int, height: int, width: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, height, width, 3), dtype=np.uint8)
    masks = rng.integers(0, 3, (n, height, width), dtype=np.uint8)
    labels = rng.integers(0, 2, (n, 2)).astype(np.float32)
    return images, masks, labels


@pytest.mark.parametrize(
    ("shape", "crop_size", "augment", "num_workers"),
    [
        ((8, 8), None, True, 0),
        ((8, 10), None, True, 0),  # not square: half turns only
        ((12, 10), 6, True, 0),  # crops, then any quarter turn on the square crop
        ((12, 10), 6, False, 0),
        ((8, 8), None, False, 0),
        ((12, 10), 6, True, 2),  # workers only fetch: the same batches
    ],
)
def test_epoch_loader_yields_the_contract_batches(shape, crop_size, augment, num_workers):
    images, masks, labels = _tiles(11, *shape)
    params = {**NORM, "augment": augment}
    policy = AugmentationPolicy(shape, crop_size=crop_size, dihedral=augment)
    sampler = EpochBatchSampler(11, 4, torch.Generator().manual_seed(5), policy)
    loader = tile_loader(TileDataset(images, masks=masks, labels=labels), sampler, 5, num_workers)
    reference_generator = torch.Generator().manual_seed(5)
    passes = (epoch_batches(11, 4, reference_generator) for _ in range(3))
    expected = model_batches(
        itertools.chain.from_iterable(passes), images, params, reference_generator, masks, crop_size
    )
    got = [batch for _ in range(3) for batch in loader]  # three epochs
    assert len(loader) == 3 and len(got) == 9
    for batch, (idx, x, y) in zip(got, expected, strict=True):
        model_input = training_images(batch["image"], params, CPU)
        assert torch.equal(model_input, x) and model_input.stride() == x.stride()
        assert torch.equal(batch["mask"], y)
        assert torch.equal(batch["label"], torch.from_numpy(labels[idx]))


def test_step_loader_yields_the_contract_batches_with_valid_masks():
    images, _, labels = _tiles(5, 8, 8)
    valid = torch.rand(5, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.3
    params = {**NORM, "augment": True}
    sampler = StepBatchSampler(5, 2, 7, torch.Generator().manual_seed(1), AugmentationPolicy((8, 8), dihedral=True))
    loader = tile_loader(TileDataset(images, valid=valid, labels=labels), sampler, 1)
    reference_generator = torch.Generator().manual_seed(1)
    expected = model_batches(step_batches(5, 2, 7, reference_generator), images, params, reference_generator,
                             valid.numpy())
    got = list(loader)
    assert len(loader) == 7 and [len(b["label"]) for b in got] == [2] * 7  # the rest of a pass is skipped
    for batch, (idx, x, v) in zip(got, expected, strict=True):
        assert torch.equal(training_images(batch["image"], params, CPU), x)
        assert torch.equal(batch["valid"], v) and batch["valid"].dtype == torch.bool
        assert torch.equal(batch["label"], torch.from_numpy(labels[idx]))


def test_fewer_tiles_than_a_batch_give_every_tile_each_step():
    sampler = StepBatchSampler(3, 8, 4, torch.Generator().manual_seed(0), AugmentationPolicy((4, 4)))
    batches = list(sampler)
    assert len(batches) == 4 and all(sorted(k.index for k in b) == [0, 1, 2] for b in batches)


def test_the_loader_leaves_the_global_rng_alone():
    images, masks, _ = _tiles(6, 8, 8)
    sampler = EpochBatchSampler(6, 4, torch.Generator().manual_seed(0), AugmentationPolicy((8, 8), 4, True))
    loader = tile_loader(TileDataset(images, masks=masks), sampler, 0)
    state = torch.get_rng_state()
    for _ in range(2):
        list(loader)
    assert torch.equal(torch.get_rng_state(), state)


def test_augmentation_moves_image_and_mask_together():
    images = np.arange(2 * 6 * 6 * 3, dtype=np.uint8).reshape(2, 6, 6, 3)
    masks = images[..., 0].copy()
    dataset = TileDataset(images, masks=masks)
    for augmentation in (Augmentation((1, 2, 4), 1, True), Augmentation(None, 3, False), Augmentation(None, 2, True)):
        sample = dataset[SampleKey(1, augmentation)]
        assert isinstance(sample["image"], tv_tensors.Image) and isinstance(sample["mask"], tv_tensors.Mask)
        assert torch.equal(sample["image"][0], sample["mask"])
    sample = dataset[SampleKey(1, Augmentation((1, 2, 4), 1, False))]
    # a quarter turn counter-clockwise: the crop's top-right pixel lands top-left
    assert sample["mask"][0, 0] == masks[1, 1, 5]
    assert tuple(sample["image"].shape) == (3, 4, 4)


def test_dataset_fields_must_match_the_images():
    images, masks, _ = _tiles(3, 4, 4)
    with pytest.raises(ValueError, match="masks has 2 rows for 3 images"):
        TileDataset(images, masks=masks[:2])
