"""load_clip / encode_texts / clip_image_features on a tiny random open_clip ViT saved to disk."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_foundation import (
    CLIP_EMBED_DIM,
    CLIP_IMAGE_SIZE,
    CLIP_LAYERS,
    CLIP_PATCH,
    CLIP_WIDTH,
    build_tiny_clip,
    write_tiny_clip,
)

from wsss_project.errors import UserInputError
from wsss_project.foundation.clip import (
    CHECKPOINT_PARAM,
    DENSE_PATH_VALUE,
    MODEL_NAME_PARAM,
    check_clip_checkpoint,
    clip_image_features,
    encode_texts,
    load_clip,
    preprocess_images,
)

DEVICE = torch.device("cpu")
GRID = CLIP_IMAGE_SIZE // CLIP_PATCH


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def bundle(saved):
    config, checkpoint = saved
    return load_clip(str(config), checkpoint, DEVICE)


def _tiles(n: int = 3, side: int = 80, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def test_bundle_describes_the_architecture_and_is_frozen(bundle):
    assert (bundle.patch_size, bundle.image_size, bundle.width, bundle.embed_dim, bundle.n_layers) == (
        CLIP_PATCH, CLIP_IMAGE_SIZE, CLIP_WIDTH, CLIP_EMBED_DIM, CLIP_LAYERS)
    assert not bundle.model.training
    assert not any(p.requires_grad for p in bundle.model.parameters())


def test_loaded_weights_equal_the_saved_model(bundle):
    reference = build_tiny_clip()
    loaded = bundle.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in reference.state_dict().items())


def test_text_embeddings_match_the_in_memory_model_and_are_normalised(bundle):
    texts = ["an overhead satellite image of landslide", "an overhead satellite image of tree", "car"]
    embeddings = encode_texts(bundle, texts, batch_size=2)
    assert embeddings.shape == (3, CLIP_EMBED_DIM) and embeddings.dtype == torch.float32
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(3))
    with torch.no_grad():
        expected = build_tiny_clip().encode_text(bundle.tokenizer(texts), normalize=True)
    torch.testing.assert_close(embeddings, expected)


def test_feature_shapes_and_the_final_block_matches_open_clip(bundle):
    tiles = _tiles()
    feats = clip_image_features(bundle, tiles, batch_size=2, with_block_outputs=True, with_attentions=True)
    assert feats.grid == (GRID, GRID)
    assert feats.patch_tokens.shape == (3, CLIP_EMBED_DIM, GRID, GRID)
    assert len(feats.block_outputs) == CLIP_LAYERS and len(feats.attentions) == CLIP_LAYERS
    assert all(b.shape == (3, CLIP_WIDTH, GRID, GRID) for b in feats.block_outputs)
    assert all(a.shape == (3, GRID * GRID, GRID * GRID) for a in feats.attentions)
    # open_clip's own forward on the same pixels: intermediates and ln_post/proj of its tokens
    reference = build_tiny_clip().visual
    pixels = preprocess_images(tiles, CLIP_IMAGE_SIZE, bundle.image_mean, bundle.image_std, DEVICE)
    with torch.no_grad():
        out = reference.forward_intermediates(pixels)
        reference.output_tokens = True
        pooled, tokens = reference(pixels)
    for mine, theirs in zip(feats.block_outputs, out["image_intermediates"], strict=True):
        torch.testing.assert_close(mine, theirs)
    expected_tokens = (tokens @ reference.proj).transpose(1, 2).reshape(3, CLIP_EMBED_DIM, GRID, GRID)
    torch.testing.assert_close(feats.patch_tokens, expected_tokens)
    torch.testing.assert_close(pooled, out["image_features"])


def test_attention_rows_sum_to_one_and_match_multihead_attention(bundle):
    tiles = _tiles(2)
    feats = clip_image_features(bundle, tiles, batch_size=4, with_patch_tokens=False, with_attentions=True)
    assert feats.patch_tokens is None and feats.block_outputs is None
    for attention in feats.attentions:
        torch.testing.assert_close(attention.sum(-1), torch.ones(2, GRID * GRID))
        assert (attention >= 0).all()
    # block 0 by hand: nn.MultiheadAttention's own head-averaged weights on the embedded tokens
    visual = build_tiny_clip().visual
    pixels = preprocess_images(tiles, CLIP_IMAGE_SIZE, bundle.image_mean, bundle.image_std, DEVICE)
    with torch.no_grad():
        x = visual._embeds(pixels)
        block = visual.transformer.resblocks[0]
        h = block.ln_1(x)
        _, weights = block.attn(h, h, h, need_weights=True, average_attn_weights=True)
    patches = weights[:, 1:, 1:]
    torch.testing.assert_close(feats.attentions[0], patches / patches.sum(-1, keepdim=True))


def test_value_path_is_out_proj_of_values_through_ln_post_and_proj(bundle):
    tiles = _tiles(2)
    feats = clip_image_features(bundle, tiles, batch_size=2, dense_path=DENSE_PATH_VALUE, with_block_outputs=True)
    visual = build_tiny_clip().visual
    pixels = preprocess_images(tiles, CLIP_IMAGE_SIZE, bundle.image_mean, bundle.image_std, DEVICE)
    with torch.no_grad():
        x = visual._embeds(pixels)
        x = visual.transformer.resblocks[0](x)
        last = visual.transformer.resblocks[-1]
        v = F.linear(last.ln_1(x), last.attn.in_proj_weight, last.attn.in_proj_bias).chunk(3, dim=-1)[2]
        dense = visual.ln_post(last.attn.out_proj(v)[:, 1:]) @ visual.proj
    torch.testing.assert_close(feats.patch_tokens, dense.transpose(1, 2).reshape(2, CLIP_EMBED_DIM, GRID, GRID))
    # the block outputs are unaffected by the dense path
    standard = clip_image_features(bundle, tiles, batch_size=2, with_block_outputs=True)
    torch.testing.assert_close(feats.block_outputs[-1], standard.block_outputs[-1])
    assert not torch.allclose(feats.patch_tokens, standard.patch_tokens)


def test_other_image_sizes_resize_the_positional_embedding(bundle):
    side = CLIP_IMAGE_SIZE + 2 * CLIP_PATCH
    feats = clip_image_features(bundle, _tiles(1), batch_size=1, image_size=side, with_attentions=True)
    grid = side // CLIP_PATCH
    assert feats.patch_tokens.shape == (1, CLIP_EMBED_DIM, grid, grid)
    assert feats.attentions[0].shape == (1, grid * grid, grid * grid)
    with pytest.raises(ValueError, match="multiple of the CLIP patch size"):
        clip_image_features(bundle, _tiles(1), batch_size=1, image_size=side + 1)


def test_batching_does_not_change_features(bundle):
    tiles = _tiles(3)
    one = clip_image_features(bundle, tiles, batch_size=1).patch_tokens
    all_ = clip_image_features(bundle, tiles, batch_size=3).patch_tokens
    torch.testing.assert_close(one, all_)


def test_open_clip_training_checkpoint_with_module_prefix_loads(tmp_path, bundle):
    config, checkpoint = write_tiny_clip(tmp_path, wrap=True)
    wrapped = load_clip(str(config), checkpoint, DEVICE)
    texts = ["an overhead satellite image of building"]
    torch.testing.assert_close(encode_texts(wrapped, texts, 1), encode_texts(bundle, texts, 1))
    check_clip_checkpoint(str(config), checkpoint)


def test_null_and_missing_checkpoints_name_the_parameter(saved, tmp_path):
    config, _ = saved
    with pytest.raises(UserInputError, match=f"`{CHECKPOINT_PARAM}` is not set"):
        load_clip(str(config), None, DEVICE)
    missing = tmp_path / "nope.pt"
    with pytest.raises(UserInputError, match=CHECKPOINT_PARAM) as info:
        load_clip(str(config), missing, DEVICE)
    assert str(missing) in str(info.value)


def test_checkpoint_of_another_architecture_is_rejected_with_the_differences(saved, tmp_path):
    config, checkpoint = saved
    state = torch.load(checkpoint, weights_only=True)
    extra = tmp_path / "extra.pt"
    torch.save({**state, "surprise": torch.zeros(1)}, extra)
    missing = tmp_path / "missing.pt"
    torch.save({k: v for k, v in state.items() if k != "visual.proj"}, missing)
    unrelated = tmp_path / "unrelated.pt"
    torch.save({"encoder.weight": torch.zeros(2)}, unrelated)
    for path, words in ((extra, "1 unexpected tensors: surprise"), (missing, "1 missing tensors: visual.proj"),
                        (unrelated, "matches none of the")):
        for check in (lambda p: load_clip(str(config), p, DEVICE), lambda p: check_clip_checkpoint(str(config), p)):
            with pytest.raises(UserInputError, match=CHECKPOINT_PARAM) as info:
                check(path)
            assert words in str(info.value) and str(path) in str(info.value)
    with pytest.raises(UserInputError, match="shape mismatches"):
        load_clip("ViT-B-16", checkpoint, DEVICE)


def test_unreadable_checkpoint_and_unknown_model_name(saved, tmp_path):
    config, _ = saved
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserInputError, match=f"not a readable CLIP checkpoint \\(parameter `{CHECKPOINT_PARAM}`"):
        load_clip(str(config), garbage, DEVICE)
    with pytest.raises(UserInputError, match=MODEL_NAME_PARAM):
        load_clip("ViT-Q-99", garbage, DEVICE)
    with pytest.raises(UserInputError, match=MODEL_NAME_PARAM):
        load_clip(str(tmp_path / "absent.json"), garbage, DEVICE)


def test_images_must_be_uint8_rgb(bundle):
    with pytest.raises(ValueError, match="uint8"):
        clip_image_features(bundle, np.zeros((1, 8, 8, 3), np.float32), batch_size=1)

