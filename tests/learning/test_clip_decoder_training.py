"""Training the CLIP adapter + decoder (eq. 21: L_seg + L_aff) on frozen features, and predicting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from wsss_project.learning.clip_decoder_training import (
    CLIP_DECODER_KEYS,
    affinity_loss,
    predict_clip_probabilities,
    select_blocks,
    token_labels,
    train_clip_decoder,
)

CPU = torch.device("cpu")
IGNORE = 255

# Example of the `segmentation_training.clip_decoder` section, tiny so tests stay fast.
TINY_DECODER = {
    "blocks": "all", "image_size": None, "adapter_dim": 8, "decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2,
    "mlp_ratio": 2.0, "seg_weight": 1.0, "aff_weight": 0.1, "lr": 1e-2, "weight_decay": 1e-3,
    "poly_power": 0.9, "epochs": 3, "batch_size": 2, "feature_batch_size": 3, "feature_cache_dtype": "float32",
}


@pytest.fixture(autouse=True)
def _own_random_state():
    """These tests seed torch; the global generator is given back as it was (later modules draw from it)."""
    with torch.random.fork_rng():
        yield


class FrozenStandIn(nn.Module):
    """A stand-in for the frozen CLIP: two 'blocks' of strided convs (patch 8) on the image."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.block1 = nn.Conv2d(3, 6, 8, stride=8)
        self.block2 = nn.Conv2d(6, 6, 1)
        self.requires_grad_(False)

    def __call__(self, images: np.ndarray) -> list[torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
        first = self.block1(x)
        return [first, self.block2(first)]


def _tiles(n: int = 6, size: int = 32):
    """Tiles whose left half is bright (class 1) and right half dark (class 0); one column ignored."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 40, (n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n):
        cut = int(rng.integers(8, 24))
        images[i, :, :cut] += 180
        masks[i, :, :cut] = 1
    masks[:, :, -1] = IGNORE
    return images, masks


def test_example_params_cover_every_key():
    assert set(CLIP_DECODER_KEYS) == set(TINY_DECODER)


def test_token_labels_take_each_cells_majority_with_ties_to_the_class():
    mask = torch.tensor([[[1, 1, 0, IGNORE],
                          [1, 0, IGNORE, 0],
                          [IGNORE, IGNORE, 2, 2],
                          [IGNORE, 1, 2, 2]]], dtype=torch.uint8)
    # cells: 3 x class 1 -> 1; two 0 and two 255 -> 0 (tie to the class); 3 x 255 -> 255; 4 x 2 -> 2
    assert token_labels(mask, (2, 2), n_outputs=3).tolist() == [[1, 0, IGNORE, 2]]


def test_affinity_loss_on_a_hand_computed_2x2_grid_leaves_ignored_pairs_out():
    labels = torch.tensor([[0, 0, 1, IGNORE]])
    scores = torch.zeros(1, 4, 4)
    scores[0, 0, 1] = 2 * math.log(3)  # asymmetric: (S + S^T) / 2 = ln 3 -> sigmoid 0.75
    scores[0, 0, 2] = scores[0, 2, 0] = math.log(1 / 3)  # sigmoid 0.25
    scores[0, 3, :] = scores[0, :, 3] = 50.0  # token 3 is ignored: were its pairs used, the loss would move
    # positive pairs (0,0) (1,1) (2,2): 1 - 0.5 each; (0,1) (1,0): 1 - 0.75 each -> mean 2.0 / 5 = 0.4
    # negative pairs (0,2) (2,0): 0.25 each; (1,2) (2,1): 0.5 each -> mean 1.5 / 4 = 0.375
    expected = 0.5 * 0.4 + 0.5 * 0.375
    assert affinity_loss(scores, labels).item() == pytest.approx(expected)
    scores[0, 3, :] = scores[0, :, 3] = -50.0
    assert affinity_loss(scores, labels).item() == pytest.approx(expected)


def test_affinity_loss_is_zero_without_valid_pairs_and_pulls_same_labels_together():
    scores = torch.zeros(1, 3, 3, requires_grad=True)
    assert affinity_loss(scores, torch.full((1, 3), IGNORE)).item() == 0.0
    affinity_loss(scores, torch.tensor([[1, 1, 0]])).backward()
    assert scores.grad[0, 0, 1] < 0 < scores.grad[0, 0, 2]  # raise same-label scores, lower the others


def test_blocks_are_counted_from_one_and_checked_against_the_clip():
    assert select_blocks("all", 3) == [0, 1, 2]
    assert select_blocks([3, 1], 12) == [2, 0]
    for bad in ([0], [13], [2, 2], []):
        with pytest.raises(ValueError, match="clip_decoder.blocks"):
            select_blocks(bad, 12)


def test_training_never_touches_the_frozen_model_and_saves_only_the_decoder():
    frozen = FrozenStandIn()
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    images, masks = _tiles()
    model, history = train_clip_decoder(frozen, images, masks, 2, TINY_DECODER, seed=0, device=CPU,
                                        backbone={"model_name": "stand-in"})
    assert all(torch.equal(before[k], v) for k, v in frozen.state_dict().items())
    assert all(p.grad is None for p in frozen.parameters())
    state = model.state_dict()
    assert not {k for k in state if k.startswith(("block1", "block2"))}
    assert state["_extra_state"] == {"model_name": "stand-in"}
    assert {k.split(".")[0] for k in state} == {"adapter", "blocks", "norm", "head", "_extra_state"}
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert {"loss", "seg_loss", "aff_loss", "lr", "seconds"} <= set(history[0])


def test_the_loss_is_eq_21_and_the_learning_rate_decays_polynomially():
    images, masks = _tiles()
    _, history = train_clip_decoder(FrozenStandIn(), images, masks, 2, TINY_DECODER, seed=0, device=CPU)
    for record in history:
        assert record["loss"] == pytest.approx(
            TINY_DECODER["seg_weight"] * record["seg_loss"] + TINY_DECODER["aff_weight"] * record["aff_loss"], rel=1e-5)
    steps = 3  # 6 tiles, batch 2
    total = TINY_DECODER["epochs"] * steps
    expected = [TINY_DECODER["lr"] * (1 - e * steps / total) ** TINY_DECODER["poly_power"] for e in range(3)]
    assert [h["lr"] for h in history] == pytest.approx(expected)
    assert history[-1]["loss"] < history[0]["loss"]


def test_training_is_deterministic_for_a_seed_and_depends_on_it():
    images, masks = _tiles()
    states = [train_clip_decoder(FrozenStandIn(), images, masks, 2, TINY_DECODER, seed=s, device=CPU)[0].state_dict()
              for s in (0, 0, 1)]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0] if k != "_extra_state")
    assert not torch.equal(states[0]["head.weight"], states[2]["head.weight"])


def test_the_aff_weight_is_read():
    images, masks = _tiles()
    runs = [train_clip_decoder(FrozenStandIn(), images, masks, 2, {**TINY_DECODER, "aff_weight": w}, seed=0,
                               device=CPU)[0].state_dict()["head.weight"] for w in (0.0, 1.0)]
    assert not torch.equal(*runs)


def test_predictions_are_probabilities_of_whole_tiles_and_learn_the_bright_half():
    images, masks = _tiles()
    frozen = FrozenStandIn()
    model, _ = train_clip_decoder(frozen, images, masks, 2, {**TINY_DECODER, "epochs": 30}, seed=0, device=CPU)
    probs = predict_clip_probabilities(model, frozen, images, batch_size=4, tta_flips=False)
    assert probs.shape == (6, 2, 32, 32) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    valid = masks != IGNORE
    accuracy = ((probs.argmax(axis=1) == masks) & valid).sum() / valid.sum()
    assert accuracy > 0.85
    tta = predict_clip_probabilities(model, frozen, images, batch_size=4, tta_flips=True)
    assert tta.shape == probs.shape and not np.allclose(tta, probs)
    np.testing.assert_allclose(tta.sum(axis=1), 1.0, atol=1e-5)


def test_tta_flips_back_what_it_flips():
    images, masks = _tiles()
    frozen = FrozenStandIn()
    model, _ = train_clip_decoder(frozen, images, masks, 2, {**TINY_DECODER, "epochs": 1}, seed=0, device=CPU)
    mirrored = np.ascontiguousarray(images[:, :, ::-1])
    a = predict_clip_probabilities(model, frozen, images, batch_size=6, tta_flips=True)
    b = predict_clip_probabilities(model, frozen, mirrored, batch_size=6, tta_flips=True)
    np.testing.assert_allclose(a, b[:, :, :, ::-1], atol=1e-5)
