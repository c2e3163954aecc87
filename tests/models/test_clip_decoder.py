"""The CLIP feature adapter and transformer decoder (seed 003, eq. 5-8) on plain tensors."""

from __future__ import annotations

import pytest
import torch

from wsss_project.models.clip_decoder import ClipDecoder, FeatureAdapter, SelfAttention


@pytest.fixture(autouse=True)
def _own_random_state():
    """These tests seed torch; the global generator is given back as it was (later modules draw from it)."""
    with torch.random.fork_rng():
        yield


def _decoder(**overrides) -> ClipDecoder:
    args = {"in_dim": 12, "n_blocks": 3, "n_outputs": 3, "adapter_dim": 8, "decoder_dim": 16,
            "depth": 2, "heads": 4, "mlp_ratio": 2.0, **overrides}
    return ClipDecoder(**args)


def _blocks(n_blocks: int = 3, batch: int = 2, width: int = 12, grid: tuple[int, int] = (4, 5)) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.randn(batch, width, *grid) for _ in range(n_blocks)]


def test_logits_reach_the_tile_size_with_one_map_per_output_and_scores_per_token_pair():
    out = _decoder()(_blocks(), (37, 50))
    assert out.logits.shape == (2, 3, 37, 50)
    assert out.attention_scores.shape == (2, 20, 20)
    assert out.grid == (4, 5)


def test_the_adapter_maps_every_block_then_fuses_them_to_decoder_dim():
    adapter = FeatureAdapter(in_dim=12, n_blocks=3, adapter_dim=8, decoder_dim=16)
    assert len(adapter.blocks) == 3 and adapter.fuse.in_channels == 3 * 8
    assert adapter(_blocks()).shape == (2, 16, 4, 5)
    # Each block has its own MLP: changing one block's input changes the fused map.
    blocks = _blocks()
    changed = [blocks[0], blocks[1] + 1, blocks[2]]
    assert not torch.allclose(adapter(blocks), adapter(changed))


def test_the_adapter_refuses_another_number_of_blocks_or_mixed_grids():
    adapter = FeatureAdapter(in_dim=12, n_blocks=3, adapter_dim=8, decoder_dim=16)
    with pytest.raises(ValueError, match="3 CLIP blocks"):
        adapter(_blocks(2))
    with pytest.raises(ValueError, match="token grid"):
        adapter([*_blocks(2), torch.randn(2, 12, 3, 3)])


def test_attention_scores_are_the_pre_softmax_scaled_dot_products():
    torch.manual_seed(1)
    attention = SelfAttention(dim=8, heads=2)
    x = torch.randn(1, 5, 8)
    _, scores = attention(x)
    q, k, _ = attention.qkv(x).chunk(3, dim=-1)
    head0 = (q[..., :4] @ k[..., :4].transpose(-2, -1)) / 2.0  # sqrt(head dim 4)
    torch.testing.assert_close(scores[:, 0], head0)


def test_heads_must_divide_the_decoder_width():
    with pytest.raises(ValueError, match="divisible"):
        _decoder(decoder_dim=10, heads=4)


def test_the_decoder_is_flip_equivariant_so_flipped_features_teach_nothing_new():
    model = _decoder().eval()
    blocks = _blocks(grid=(4, 4))
    with torch.no_grad():
        plain = model(blocks, (16, 16)).logits
        flipped = model([torch.flip(b, (-1,)) for b in blocks], (16, 16)).logits
    torch.testing.assert_close(torch.flip(flipped, (-1,)), plain, atol=1e-5, rtol=1e-5)


def test_the_state_dict_holds_the_backbone_identity_and_restores_it():
    model = _decoder(backbone={"model_name": "ViT-B-16", "checkpoint_sha256": "abc", "blocks": [1, 2, 3]})
    state = model.state_dict()
    assert state["_extra_state"] == {"model_name": "ViT-B-16", "checkpoint_sha256": "abc", "blocks": [1, 2, 3]}
    fresh = _decoder()
    fresh.load_state_dict(state)
    assert fresh.backbone["checkpoint_sha256"] == "abc"
    torch.testing.assert_close(fresh.head.weight, model.head.weight)
