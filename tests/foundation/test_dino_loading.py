"""load_dino / dino_features on a tiny random DINOv2 saved with save_pretrained."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_foundation import (
    DINO_HIDDEN,
    DINO_IMAGE_SIZE,
    DINO_LAYERS,
    DINO_PATCH,
    build_tiny_dino,
    write_tiny_dino,
)

from wsss_project.errors import UserInputError
from wsss_project.foundation.clip import preprocess_images
from wsss_project.foundation.dino import PATH_PARAM, dino_features, load_dino

DEVICE = torch.device("cpu")
GRID = DINO_IMAGE_SIZE // DINO_PATCH


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_dino(write_tiny_dino(tmp_path_factory.mktemp("dino")), DEVICE)


def _tiles(n: int = 3, side: int = 70) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def test_bundle_describes_the_model_and_is_frozen(bundle):
    assert (bundle.patch_size, bundle.image_size, bundle.hidden_size, bundle.n_layers, bundle.n_prefix_tokens) == (
        DINO_PATCH, DINO_IMAGE_SIZE, DINO_HIDDEN, DINO_LAYERS, 1)
    assert not bundle.model.training and not any(p.requires_grad for p in bundle.model.parameters())


def test_patch_tokens_equal_the_in_memory_model(bundle):
    tiles = _tiles()
    feats = dino_features(bundle, tiles, batch_size=2, with_attentions=True)
    assert feats.grid == (GRID, GRID)
    assert feats.patch_tokens.shape == (3, DINO_HIDDEN, GRID, GRID)
    reference = build_tiny_dino()
    pixels = preprocess_images(tiles, DINO_IMAGE_SIZE, bundle.image_mean, bundle.image_std, DEVICE)
    with torch.no_grad():
        out = reference(pixel_values=pixels, output_attentions=True)
    expected = out.last_hidden_state[:, 1:].transpose(1, 2).reshape(3, DINO_HIDDEN, GRID, GRID)
    torch.testing.assert_close(feats.patch_tokens, expected)
    assert len(feats.attentions) == DINO_LAYERS
    for mine, theirs in zip(feats.attentions, out.attentions, strict=True):
        assert mine.shape == (3, GRID * GRID, GRID * GRID)
        torch.testing.assert_close(mine.sum(-1), torch.ones(3, GRID * GRID))
        patches = theirs.mean(1)[:, 1:, 1:]
        torch.testing.assert_close(mine, patches / patches.sum(-1, keepdim=True))


def test_attentions_only_when_asked_and_other_sizes(bundle):
    side = DINO_IMAGE_SIZE + 2 * DINO_PATCH
    feats = dino_features(bundle, _tiles(1), batch_size=1, image_size=side)
    assert feats.attentions is None
    assert feats.patch_tokens.shape == (1, DINO_HIDDEN, side // DINO_PATCH, side // DINO_PATCH)
    with pytest.raises(ValueError, match="multiple of the DINOv2 patch size"):
        dino_features(bundle, _tiles(1), batch_size=1, image_size=side + 1)


def test_null_missing_and_bad_directories_name_the_parameter(tmp_path):
    with pytest.raises(UserInputError, match=f"`{PATH_PARAM}` is not set"):
        load_dino(None, DEVICE)
    with pytest.raises(UserInputError, match=PATH_PARAM) as info:
        load_dino(tmp_path / "absent", DEVICE)
    assert "absent" in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserInputError, match=PATH_PARAM):
        load_dino(empty, DEVICE)
