"""ResUNet training on masks with 255 = ignore, and probability prediction."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from batch_contract import epoch_batches, model_batches

from wsss_project.learning.cam_training import deterministic_mode
from wsss_project.learning.segmentation_training import (
    SEG_TRAIN_KEYS,
    build_resunet,
    predict_probabilities,
    segmentation_loss,
    train_resunet,
)
from wsss_project.utils.seed import seed_everything

CPU = torch.device("cpu")

# Example of the `segmentation_training` parameters, tiny so tests stay fast.
DEFAULT_SEG_PARAMS = {
    "seed": 0,
    "epochs": 1,
    "batch_size": 4,
    "optimizer": "adamw",
    "lr": 1e-2,
    "weight_decay": 1e-4,
    "dice_weight": 0.5,
    "augment": True,
    "crop_size": None,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "base_width": 4,
    "depth": 2,
    "tta_flips": False,
}


def _tiles(n: int = 4, size: int = 32, seed: int = 0):
    """Tiles with a bright square whose pixels are class 1; a border strip is ignored."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 100, (n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n):
        r, c = rng.integers(0, size - 12, 2)
        images[i, r : r + 12, c : c + 12] = 220
        masks[i, r : r + 12, c : c + 12] = 1
    masks[:, :, :2] = 255
    return images, masks


def test_example_params_cover_every_key():
    assert set(SEG_TRAIN_KEYS) <= set(DEFAULT_SEG_PARAMS)


def test_missing_key_names_the_namespace():
    images, masks = _tiles()
    params = {k: v for k, v in DEFAULT_SEG_PARAMS.items() if k != "dice_weight"}
    with pytest.raises(KeyError, match=r"segmentation_training\.dice_weight"):
        train_resunet(images, masks, 2, params, CPU)


def test_overfits_a_tiny_batch():
    images, masks = _tiles()
    params = {**DEFAULT_SEG_PARAMS, "epochs": 25, "augment": False}
    model, history = train_resunet(images, masks, 2, params, CPU)
    assert len(history) == 25 and {"epoch", "loss", "lr", "seconds"} <= set(history[0])
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    pred = predict_probabilities(model, images, params, CPU, batch_size=2).argmax(axis=1)
    valid = masks != 255
    assert (pred[valid] == masks[valid]).mean() > 0.9


@pytest.mark.parametrize("dice_weight", [0.0, 1.0])
def test_ignored_pixels_change_neither_loss_nor_gradient(dice_weight):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    target[:, :4] = 255
    changed = logits.clone()
    changed[:, :, :4] = torch.randn(2, 3, 4, 8) * 10  # anything under the ignored pixels
    changed.requires_grad_(True)
    loss = segmentation_loss(changed, target, dice_weight)
    torch.testing.assert_close(loss, segmentation_loss(logits, target, dice_weight))
    loss.backward()
    assert changed.grad[:, :, :4].abs().max() == 0
    assert changed.grad[:, :, 4:].abs().max() > 0


def test_all_ignored_batch_gives_zero_loss():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((1, 4, 4), 255), 1.0)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_same_seed_gives_identical_weights_with_crops():
    images, masks = _tiles(n=6, size=32)
    params = {**DEFAULT_SEG_PARAMS, "crop_size": 16, "epochs": 2}
    m1, h1 = train_resunet(images, masks, 2, params, CPU)
    m2, h2 = train_resunet(images, masks, 2, params, CPU)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert [h["loss"] for h in h1] == [h["loss"] for h in h2]
    other, _ = train_resunet(images, masks, 2, {**params, "seed": 1}, CPU)
    assert not all(map(torch.equal, other.state_dict().values(), m1.state_dict().values()))


@pytest.mark.parametrize(("crop_size", "augment"), [(None, True), (16, True), (16, False)])
def test_trains_on_exactly_the_contract_batches(crop_size, augment):
    """With lr 0 the weights stay put, so each epoch's loss is the mean loss of the initial model
    over the batches it was given: equal to the bit only for the contract's batches, in order."""
    images, masks = _tiles(n=6, size=32)
    params = {**DEFAULT_SEG_PARAMS, "crop_size": crop_size, "augment": augment, "epochs": 2, "lr": 0.0}
    _, history = train_resunet(images, masks, 2, params, CPU)

    seed_everything(params["seed"])
    model = build_resunet(2, params).train()
    generator = torch.Generator().manual_seed(params["seed"])
    passes = (epoch_batches(6, params["batch_size"], generator) for _ in range(2))
    batches = model_batches(itertools.chain.from_iterable(passes), images, params, generator, masks, crop_size)
    losses = [0.0, 0.0]
    with deterministic_mode(CPU), torch.no_grad():
        for k, (idx, x, y) in enumerate(batches):
            loss = segmentation_loss(model(x), y.long(), params["dice_weight"])
            losses[0 if k < 2 else 1] += loss.item() * len(idx)
    assert [h["loss"] for h in history] == [total / 6 for total in losses]


def test_rejects_crop_not_divisible_and_bad_mask_values():
    images, masks = _tiles()
    with pytest.raises(ValueError, match="divisible"):
        train_resunet(images, masks, 2, {**DEFAULT_SEG_PARAMS, "crop_size": 18}, CPU)
    bad = masks.copy()
    bad[0, 0, 5] = 7
    with pytest.raises(ValueError, match=r"\[7\]"):
        train_resunet(images, bad, 2, DEFAULT_SEG_PARAMS, CPU)


@pytest.mark.parametrize("tta", [False, True])
def test_predict_probabilities_shape_and_simplex(tta):
    images, masks = _tiles(n=3, size=34)  # 34 is not divisible by 4: padded internally
    model, _ = train_resunet(images[:, :32, :32], masks[:, :32, :32], 2, DEFAULT_SEG_PARAMS, CPU)
    probs = predict_probabilities(model, images, {**DEFAULT_SEG_PARAMS, "tta_flips": tta}, CPU, 2)
    assert probs.shape == (3, 2, 34, 34) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_alps_pretraining_copies_the_body_into_the_binary_model(monkeypatch):
    from wsss_project.learning import segmentation_training as training
    from wsss_project.learning.segmentation_training import pretrain_resunet

    images, masks = _tiles()
    clusters = np.where(masks == 255, 255, (images[..., 0] // 64).astype(np.uint8))  # 4 "clusters" by brightness
    params = {**DEFAULT_SEG_PARAMS, "alps": {"n_clusters": 4, "epochs": 1}}
    pretrained, history = pretrain_resunet(images, clusters, params, CPU)
    assert pretrained.n_outputs == 4 and len(history) == 1
    body = pretrained.body_state_dict()
    assert not any(key.startswith(pretrained.output_prefix()) for key in body)

    seen = {}
    fit = training._fit_resunet

    def spy(model, *args, **kwargs):  # the binary model as its training starts
        seen["stem"] = model.stem.body[0].weight.detach().clone()
        seen["head"] = model.head[-1].weight.shape
        return fit(model, *args, **kwargs)

    monkeypatch.setattr(training, "_fit_resunet", spy)
    train_resunet(images, masks, 2, DEFAULT_SEG_PARAMS, CPU, body=body)
    torch.testing.assert_close(seen["stem"], body["stem.body.0.weight"])
    assert seen["head"][0] == 2  # the output layer is the binary one, not the pre-training's 4-way head


def test_without_a_body_training_is_unchanged():
    images, masks = _tiles()
    plain, _ = train_resunet(images, masks, 2, DEFAULT_SEG_PARAMS, CPU)
    empty, _ = train_resunet(images, masks, 2, DEFAULT_SEG_PARAMS, CPU, body={})
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(value, empty.state_dict()[key])
