"""CAM classifier training and CAM heatmaps (APSAM eqs. 1-2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from batch_contract import epoch_batches, model_batches
from toy_tiles import PRC_OFF

from wsss_project.errors import UserInputError
from wsss_project.learning.cam_training import (
    CAM_ARCH_KEYS,
    CAM_TRAIN_KEYS,
    bce_pos_weight,
    build_cam_classifier,
    cams_to_uint8,
    compute_cams,
    deterministic_mode,
    predict_tile_probabilities,
    train_cam_classifier,
)
from wsss_project.utils.seed import seed_everything

CPU = torch.device("cpu")

# Example of the `localization` parameters, tiny so tests stay fast. The project defaults live
# in conf/base/parameters_localization.yml.
DEFAULT_CAM_PARAMS = {
    "seed": 0,
    "epochs": 1,
    "batch_size": 8,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "lr_step_size": 10,
    "lr_gamma": 0.1,
    "augment": True,
    "pos_weight": None,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "backbone": "small",
    "base_width": 8,
    "blocks": [1, 1, 1, 1],
    "output_stride": 8,
    "pretrained_backbone": None,
    "tta_flips": False,
    **PRC_OFF,
}


def _square_tiles(n: int, size: int = 64, side: int = 16, seed: int = 0):
    """Dim noisy tiles; every other one holds a bright square. Returns images, labels, boxes."""
    rng = np.random.default_rng(seed)
    images = rng.integers(20, 90, (n, size, size, 3), dtype=np.uint8)
    labels = np.zeros((n, 1), dtype=np.int64)
    boxes = []
    for i in range(0, n, 2):
        r, c = rng.integers(0, size - side, 2)
        images[i, r : r + side, c : c + side] = 230
        labels[i] = 1
        boxes.append((i, r, c))
    return images, labels, boxes


def test_missing_key_names_the_namespace():
    params = {k: v for k, v in DEFAULT_CAM_PARAMS.items() if k != "lr"}
    images, labels, _ = _square_tiles(4)
    with pytest.raises(KeyError, match=r"localization\.lr"):
        train_cam_classifier(images, labels, params, CPU)
    with pytest.raises(KeyError, match=r"localization\.tta_flips"):
        compute_cams(None, images, {"image_mean": [0] * 3, "image_std": [1] * 3}, CPU, 2)


def test_example_params_cover_every_key():
    assert set(CAM_TRAIN_KEYS) | set(CAM_ARCH_KEYS) <= set(DEFAULT_CAM_PARAMS)


def test_learns_bright_square_and_cam_peaks_inside_it():
    images, labels, boxes = _square_tiles(48)
    # lr below the paper's 0.1: on 48 tiles, 0.1 overshoots and BN running stats lag behind.
    params = {**DEFAULT_CAM_PARAMS, "epochs": 6, "lr": 0.02}
    model, history = train_cam_classifier(images, labels, params, CPU)
    assert [h["epoch"] for h in history] == list(range(1, 7))
    assert set(history[0]) == {"epoch", "loss", "accuracy", "lr", "seconds"}
    assert history[-1]["accuracy"] > 0.9
    assert history[-1]["loss"] < history[0]["loss"]

    probs = predict_tile_probabilities(model, images, params, CPU, batch_size=16)
    assert probs.shape == (48, 1) and probs.dtype == np.float32
    assert ((probs[:, 0] > 0.5) == (labels[:, 0] == 1)).mean() > 0.9

    cams = compute_cams(model, images, params, CPU, batch_size=16)
    hits = 0
    for i, r, c in boxes:
        y, x = np.unravel_index(np.argmax(cams[i, 0]), cams[i, 0].shape)
        hits += (r - 2 <= y < r + 18) and (c - 2 <= x < c + 18)  # 2-px slack for upsampling
    assert hits / len(boxes) >= 0.75  # 0.79-0.96 over seeds 0-5


def test_same_seed_gives_identical_weights_and_cams():
    images, labels, _ = _square_tiles(12)
    runs = [train_cam_classifier(images, labels, DEFAULT_CAM_PARAMS, CPU) for _ in range(2)]
    (m1, h1), (m2, h2) = runs
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert h1[0]["loss"] == h2[0]["loss"]
    cams = [compute_cams(m, images, DEFAULT_CAM_PARAMS, CPU, batch_size=5) for m in (m1, m2)]
    assert np.array_equal(*cams)
    other, _ = train_cam_classifier(images, labels, {**DEFAULT_CAM_PARAMS, "seed": 1}, CPU)
    assert not torch.equal(other.head.weight, m1.head.weight)


def test_trains_on_exactly_the_contract_batches():
    """With lr 0 the weights stay put, so each epoch's loss and accuracy are those of the initial
    model over the batches it was given: equal to the bit only for the contract's batches, in order."""
    images, labels, _ = _square_tiles(12)
    params = {**DEFAULT_CAM_PARAMS, "epochs": 2, "lr": 0.0, "batch_size": 5}
    _, history = train_cam_classifier(images, labels, params, CPU)

    seed_everything(params["seed"])
    model = build_cam_classifier(1, params).train()
    generator = torch.Generator().manual_seed(params["seed"])
    passes = (epoch_batches(12, 5, generator) for _ in range(2))
    expected = []
    with deterministic_mode(CPU), torch.no_grad():
        for _epoch in range(2):
            batches = model_batches(next(passes), images, params, generator)
            loss_sum, correct = 0.0, 0
            for idx, x, _ in batches:
                y = torch.as_tensor(labels[idx], dtype=torch.float32)
                logits = model(x)
                loss_sum += torch.nn.functional.binary_cross_entropy_with_logits(logits, y).item() * len(idx)
                correct += int(((logits > 0) == (y > 0.5)).sum().item())
            expected.append((loss_sum / 12, correct / 12))
    assert [(h["loss"], h["accuracy"]) for h in history] == expected


def test_step_decay_of_learning_rate():
    images, labels, _ = _square_tiles(4)
    params = {**DEFAULT_CAM_PARAMS, "epochs": 3, "lr_step_size": 2, "lr_gamma": 0.5}
    _, history = train_cam_classifier(images, labels, params, CPU)
    assert [h["lr"] for h in history] == pytest.approx([0.1, 0.1, 0.05])


def test_compute_cams_is_uint8_heatmap_reaching_255():
    images, labels, _ = _square_tiles(6, size=48)
    model, _ = train_cam_classifier(images, labels, DEFAULT_CAM_PARAMS, CPU)
    for tta in (False, True):
        cams = compute_cams(model, images, {**DEFAULT_CAM_PARAMS, "tta_flips": tta}, CPU, 4)
        assert cams.shape == (6, 1, 48, 48) and cams.dtype == np.uint8
        peaks = cams.reshape(6, -1).max(axis=1)
        assert set(peaks.tolist()) <= {0, 255}


def test_cams_to_uint8_normalises_each_map_and_keeps_zero_maps_zero():
    raw = torch.zeros(2, 2, 4, 4)
    raw[0, 0, 1, 2] = 3.0
    raw[0, 0, 3, 3] = 1.5
    raw[0, 1] = -1.0  # ReLU removes it: stays zero
    raw[1, 0] = 1e-3  # tiny but positive everywhere: uniform 255
    out = cams_to_uint8(raw, (16, 16))
    assert out.dtype == torch.uint8 and out.shape == (2, 2, 16, 16)
    assert out[0, 0].max() == 255 and out[0, 0].min() == 0
    assert out[0, 1].max() == 0 and out[1, 1].max() == 0
    assert (out[1, 0] == 255).all()
    # Normalised by the peak of the upsampled map, so that map reaches exactly 255.
    up = torch.nn.functional.interpolate(raw[:1, :1], (16, 16), mode="bilinear")
    torch.testing.assert_close(out[0, 0], torch.round(255 * up[0, 0] / up.max()).to(torch.uint8))


def test_balancedbce_pos_weight():
    labels = np.array([[1, 0], [1, 0], [1, 1], [0, 0]])
    torch.testing.assert_close(bce_pos_weight(labels, "balanced"), torch.tensor([1 / 3, 3.0]))
    assert bce_pos_weight(labels, None) is None
    torch.testing.assert_close(bce_pos_weight(labels, 2), torch.tensor([2.0, 2.0]))
    with pytest.raises(ValueError, match="pos_weight"):
        bce_pos_weight(labels, "auto")


# --------------------------------------------------------------------------- backbones


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A torchvision resnet18 with random weights (no download), saved as a plain state_dict."""
    import torchvision

    torch.manual_seed(7)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet18_random.pth"
    torch.save(state, path)
    return path, state


def test_build_reads_the_backbone_key_and_loads_its_file(resnet18_file):
    path, reference = resnet18_file
    params = {**DEFAULT_CAM_PARAMS, "backbone": "resnet18", "pretrained_backbone": str(path)}
    model = build_cam_classifier(3, params)
    assert model.backbone == "resnet18" and model.n_features == 512 and model.n_classes == 3
    own = model.state_dict()
    assert all(torch.equal(own[k], reference[k]) for k in own if not k.startswith("head."))


def test_build_without_loading_ignores_the_file(tmp_path):
    """Callers that load a trained state_dict next pass load_pretrained=False: no file is read."""
    params = {
        **DEFAULT_CAM_PARAMS,
        "backbone": "resnet18",
        "pretrained_backbone": str(tmp_path / "moved_away.pth"),
    }
    model = build_cam_classifier(1, params, load_pretrained=False)
    assert model.backbone == "resnet18"
    with pytest.raises(UserInputError, match="localization.pretrained_backbone"):
        build_cam_classifier(1, params)


def test_training_with_a_file_of_another_architecture_is_an_error(resnet18_file):
    """The old loader warned and trained the small net from scratch; now nothing trains."""
    path, _ = resnet18_file
    images, labels, _ = _square_tiles(4)
    params = {**DEFAULT_CAM_PARAMS, "pretrained_backbone": str(path)}  # backbone: small, width 8
    with pytest.raises(ValueError, match="localization.backbone") as info:
        train_cam_classifier(images, labels, params, CPU)
    assert str(path) in str(info.value)


def test_missing_backbone_key_names_it():
    params = {k: v for k, v in DEFAULT_CAM_PARAMS.items() if k != "backbone"}
    with pytest.raises(KeyError, match=r"localization\.backbone"):
        build_cam_classifier(1, params)


def test_unknown_backbone_is_an_error():
    with pytest.raises(ValueError, match="resnet18"):
        build_cam_classifier(1, {**DEFAULT_CAM_PARAMS, "backbone": "vgg16"})


def test_project_defaults_declare_every_architecture_key():
    import yaml

    conf = Path(__file__).parents[2] / "conf" / "base" / "parameters_localization.yml"
    localization = yaml.safe_load(conf.read_text())["localization"]
    assert set(CAM_ARCH_KEYS) <= set(localization)
    assert localization["backbone"] == "small"
