import numpy as np
import pytest
import torch
from batch_contract import model_batches, step_batches
from toy_tiles import PRC_OFF, toy_tiles

from wsss_project.evaluation.metrics import binary_mask_metrics
from wsss_project.learning import mil_training
from wsss_project.learning.cam_training import bce_pos_weight, deterministic_mode
from wsss_project.learning.localizers import MilLocalizer
from wsss_project.learning.mil_training import (
    _rescale,
    _rescale_valid,
    build_pixel_mil,
    lr_factor,
    train_pixel_mil,
    valid_masks,
)
from wsss_project.models.pixel_mil import mil_pool
from wsss_project.utils.seed import seed_everything

MIL = {"width": 8, "n_layers": 3, "input_scale": 1.0, "pooling": "topk", "topk_fraction": 0.1, "lse_r": 5.0,
       "steps": 80, "max_passes": 100, "batch_size": 4, "lr": 1e-2, "weight_decay": 0.0, "warmup_fraction": 0.1, "pos_weight": "balanced",
       "log_every": 20}
PARAMS = {"seed": 0, "augment": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
          "tta_flips": False, "mil": MIL, **PRC_OFF}


def _data(n=8):
    tiles, masks, _, index = toy_tiles(n)
    ids = index["tile_id"].tolist()
    images = np.stack([tiles[t] for t in ids])
    return images, index[["landslide"]].to_numpy(np.float32), np.full((n, 2), 64), [masks[t] for t in ids], index


def test_trained_on_tile_labels_the_heatmap_finds_the_landslides():
    images, labels, sizes, masks, index = _data()
    model, history = train_pixel_mil(images, labels, sizes, PARAMS, torch.device("cpu"))
    assert [r["step"] for r in history] == [20, 40, 60, 80]
    assert history[-1]["loss"] < history[0]["loss"]
    heat = MilLocalizer().heatmaps(model, images, sizes, PARAMS, torch.device("cpu"))[:, 0]
    for k, positive in enumerate(labels[:, 0]):
        if positive:
            assert binary_mask_metrics(heat[k] > 128, masks[k])["iou"] > 0.5
        else:
            assert (heat[k] > 128).mean() < 0.05


def test_same_seed_same_model_and_heatmap_zero_outside_the_scene():
    images, labels, sizes, _, _ = _data(4)
    sizes = np.array([[64, 64], [64, 40], [30, 64], [64, 64]])
    params = {**PARAMS, "mil": {**MIL, "steps": 6, "log_every": 3, "warmup_fraction": 0.1}}
    runs = [train_pixel_mil(images, labels, sizes, params, torch.device("cpu"))[0] for _ in range(2)]
    heats = [MilLocalizer().heatmaps(m, images, sizes, params, torch.device("cpu")) for m in runs]
    np.testing.assert_array_equal(heats[0], heats[1])
    assert heats[0].dtype == np.uint8 and heats[0].shape == (4, 1, 64, 64)
    assert not heats[0][1, 0, :, 40:].any() and not heats[0][2, 0, 30:].any()


def test_different_seeds_give_different_models():
    images, labels, sizes, _, _ = _data(4)
    params = {**PARAMS, "mil": {**MIL, "steps": 4, "log_every": 2}}
    models = [train_pixel_mil(images, labels, sizes, {**params, "seed": s}, torch.device("cpu"))[0] for s in (0, 1)]
    assert not all(map(torch.equal, models[0].state_dict().values(), models[1].state_dict().values()))


def test_trains_on_exactly_the_contract_batches(monkeypatch):
    """With lr 0 the weights stay put, so each record's loss and accuracy are those of the initial
    model over the batches it was given: equal to the bit only for the contract's batches, in order."""
    # lr 0 is no valid setting (the schema asks lr > 0); here it only freezes the weights.
    monkeypatch.setattr(mil_training, "check_mil_params", lambda mil: None)
    images, labels, _, _, _ = _data(5)
    sizes = np.array([[64, 64], [64, 40], [30, 64], [64, 64], [50, 50]])
    mil = {**MIL, "steps": 6, "batch_size": 2, "log_every": 3, "lr": 0.0, "input_scale": 0.5}
    params = {**PARAMS, "mil": mil}
    _, history = train_pixel_mil(images, labels, sizes, params, torch.device("cpu"))

    seed_everything(params["seed"])
    model = build_pixel_mil(1, mil).to(memory_format=torch.channels_last).train()
    pos_weight = bce_pos_weight(labels, mil["pos_weight"])
    generator = torch.Generator().manual_seed(params["seed"])
    batches = model_batches(step_batches(5, 2, 6, generator), images, params, generator,
                            valid_masks(sizes, 64, 64).numpy())
    expected, loss_sum, correct = [], 0.0, 0.0
    with deterministic_mode(torch.device("cpu")), torch.no_grad():
        for step, (idx, x, valid) in enumerate(batches, start=1):
            logits = mil_pool(model(_rescale(x, 0.5)), _rescale_valid(valid, 0.5), "topk", 0.1, 5.0)
            y = torch.from_numpy(labels[idx])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight)
            loss_sum += loss.item() * len(idx)
            correct += float(((logits > 0) == (y > 0.5)).float().sum().item())
            if step % 3 == 0:
                expected.append((step, loss_sum / 6, correct / 6))
                loss_sum, correct = 0.0, 0.0
    assert [(r["step"], r["loss"], r["accuracy"]) for r in history] == expected


def test_half_scale_scores_at_tile_size():
    images, labels, sizes, _, _ = _data(4)
    params = {**PARAMS, "mil": {**MIL, "steps": 4, "log_every": 2, "warmup_fraction": 0.1, "input_scale": 0.5}}
    model, _ = train_pixel_mil(images, labels, sizes, params, torch.device("cpu"))
    assert MilLocalizer().heatmaps(model, images, sizes, params, torch.device("cpu")).shape == (4, 1, 64, 64)


@pytest.mark.parametrize(("key", "value"), [("pooling", "max"), ("topk_fraction", 0.0), ("input_scale", 2.0),
                                             ("steps", 0), ("warmup_fraction", 1.0),
                                             ("max_passes", 0), ("pos_weight", "auto"),
                                             # checked by the schema's Mil model, as in a run
                                             ("lr", 0.0), ("weight_decay", -1e-4), ("width", 0)])
def test_bad_settings_name_the_parameter(key, value):
    images, labels, sizes, _, _ = _data(2)
    with pytest.raises(ValueError, match=f"localization.mil.{key}"):
        train_pixel_mil(images, labels, sizes, {**PARAMS, "mil": {**MIL, key: value}}, torch.device("cpu"))


def test_small_tile_sets_stop_after_max_passes():
    images, labels, sizes, _, _ = _data(8)
    params = {**PARAMS, "mil": {**MIL, "steps": 50, "max_passes": 2, "log_every": 1}}
    _, history = train_pixel_mil(images, labels, sizes, params, torch.device("cpu"))
    assert history[-1]["step"] == 4  # 2 passes over 8 tiles in batches of 4, not 50 steps


def test_valid_masks_and_schedule():
    valid = valid_masks(np.array([[3, 2]]), 4, 4)[0]
    assert valid.sum() == 6 and valid[:3, :2].all()
    factors = [lr_factor(s, 5, 50) for s in range(50)]
    assert factors[4] == 1.0 and factors[0] == pytest.approx(0.2) and factors[-1] < 0.01
    assert all(a >= b for a, b in zip(factors[4:], factors[5:], strict=False))
