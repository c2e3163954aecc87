"""CAMClassifier: shapes, CAM definition (APSAM eq. 1), backbones, strict weight loading."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torchvision

from wsss_project.errors import UserInputError
from wsss_project.models.cam_classifier import BACKBONES, CAMClassifier, load_backbone_weights
from wsss_project.models.pixel_relation import RelationSpec


def _tiny(n_classes: int = 2, output_stride: int = 16) -> CAMClassifier:
    torch.manual_seed(0)
    return CAMClassifier(n_classes, base_width=8, blocks=(1, 1, 1, 1), output_stride=output_stride)


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_shapes_follow_output_stride(output_stride):
    model = _tiny(3, output_stride).eval()
    x = torch.randn(2, 3, 64, 64)
    assert model(x).shape == (2, 3)
    side = 64 // output_stride
    assert model.cams(x).shape == (2, 3, side, side)


def test_cam_is_head_weights_times_features_without_bias():
    model = _tiny(2).eval()
    with torch.no_grad():
        model.head.bias.fill_(5.0)  # a bias must not leak into the CAM
        x = torch.randn(2, 3, 64, 64)
        feats = model.features(x)
        cams = model.cams(x)
        manual = torch.zeros_like(cams)
        for c in range(2):
            for k in range(feats.shape[1]):
                manual[:, c] += model.head.weight[c, k] * feats[:, k]
        torch.testing.assert_close(cams, manual)
        # GAP is linear, so the mean CAM plus the bias is the logit.
        torch.testing.assert_close(cams.mean(dim=(2, 3)) + model.head.bias, model(x))


def test_state_dict_round_trip_weights_only(tmp_path):
    model = _tiny(2).eval()
    path = tmp_path / "cam.pt"
    torch.save(model.state_dict(), path)
    other = CAMClassifier(2, base_width=8, blocks=(1, 1, 1, 1), output_stride=16)
    other.load_state_dict(torch.load(path, weights_only=True))
    other.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), other(x))
        assert torch.equal(model.cams(x), other.cams(x))


# --------------------------------------------------------------------------- backbones


def _backbone_keys(state: dict) -> list[str]:
    return [k for k in state if not k.startswith("head.")]


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> tuple[Path, dict]:
    """A torchvision resnet18 with random weights (no download), saved as a plain state_dict."""
    torch.manual_seed(123)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet18_random.pth"
    torch.save(state, path)
    return path, state


def test_resnet18_backbone_loads_every_tensor_of_the_file(resnet18_file, caplog):
    path, reference = resnet18_file
    torch.manual_seed(0)  # a different init: equality below can only come from the file
    with caplog.at_level(logging.INFO):
        model = CAMClassifier(1, backbone="resnet18", pretrained_backbone=path)
    own = model.state_dict()
    keys = _backbone_keys(own)
    assert keys and set(keys) == {k for k in reference if not k.startswith("fc.")}
    for key in keys:
        assert torch.equal(own[key], reference[key]), key
    assert f"Loaded {len(keys)} backbone tensors" in caplog.text
    assert model.head.weight.shape == (1, 512)  # the ImageNet fc is never copied
    assert model.n_features == 512 and model.n_classes == 1


def test_small_loads_a_file_only_when_it_matches_exactly(resnet18_file):
    """`small` at ResNet-18 widths and depths is the same layout, so the file fits it."""
    path, reference = resnet18_file
    model = CAMClassifier(1, base_width=64, blocks=(2, 2, 2, 2), pretrained_backbone=path)
    assert torch.equal(model.layer4[1].conv2.weight, reference["layer4.1.conv2.weight"])


# `small` is the default, so that case builds the model exactly as before backbones existed.
@pytest.mark.parametrize(
    ("backbone", "arch"),
    [
        ("resnet34", {"backbone": "resnet34"}),
        ("small", {"base_width": 32, "blocks": (1, 1, 1, 1)}),  # the project's small defaults
    ],
)
def test_file_of_another_architecture_is_an_error(resnet18_file, backbone, arch):
    path, _ = resnet18_file
    with pytest.raises(ValueError) as info:
        CAMClassifier(1, pretrained_backbone=path, **arch)
    message = str(info.value)
    assert str(path) in message
    assert f"localization.backbone: {backbone}" in message
    assert "set localization.backbone to the architecture the file holds" in message
    if backbone == "resnet34":
        # resnet34 has 3 blocks in layer1 where resnet18 has 2: the first missing tensors.
        assert "backbone tensors missing: layer1.2.conv1.weight" in message
    else:
        assert "shape mismatches" in message and "conv1.weight (file (64, 3, 7, 7)" in message


def test_resnet50_file_into_resnet18_names_the_unexpected_keys(tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="unexpected tensors: .*conv3") as info:
        CAMClassifier(1, backbone="resnet18", pretrained_backbone=path)
    assert str(path) in str(info.value)


# `small` at ResNet-18 widths and depths has resnet18's exact layout.
SAME_LAYOUT_AS_RESNET18 = [{"backbone": "resnet18"}, {"base_width": 64, "blocks": (2, 2, 2, 2)}]


@pytest.mark.parametrize("arch", SAME_LAYOUT_AS_RESNET18)
def test_file_missing_one_tensor_names_that_key(resnet18_file, tmp_path, arch):
    _, reference = resnet18_file
    state = dict(reference)
    del state["layer3.1.bn2.running_var"]
    path = tmp_path / "resnet18_incomplete.pth"
    torch.save(state, path)
    with pytest.raises(
        ValueError, match=r"1 of \d+ backbone tensors missing: layer3\.1\.bn2\.running_var"
    ):
        CAMClassifier(1, pretrained_backbone=path, **arch)


@pytest.mark.parametrize("arch", SAME_LAYOUT_AS_RESNET18)
def test_file_with_one_wrong_shape_names_it(resnet18_file, tmp_path, arch):
    _, reference = resnet18_file
    state = dict(reference)
    state["layer2.0.bn1.weight"] = torch.ones(3)
    path = tmp_path / "resnet18_reshaped.pth"
    torch.save(state, path)
    with pytest.raises(
        ValueError, match=r"layer2\.0\.bn1\.weight \(file \(3,\) vs model \(128,\)\)"
    ):
        CAMClassifier(1, pretrained_backbone=path, **arch)


def test_wrapped_checkpoint_with_module_prefix_and_no_step_counters_loads(resnet18_file, tmp_path):
    _, reference = resnet18_file
    state = {
        f"module.{k}": v for k, v in reference.items() if not k.endswith("num_batches_tracked")
    }
    path = tmp_path / "dataparallel.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)
    model = CAMClassifier(2, backbone="resnet18", pretrained_backbone=path)
    assert load_backbone_weights(model, path) == sum(not k.startswith("module.fc.") for k in state)
    assert torch.equal(model.layer1[0].conv1.weight, reference["layer1.0.conv1.weight"])
    assert torch.equal(model.bn1.running_mean, reference["bn1.running_mean"])


def test_non_state_dict_file_is_an_error(tmp_path):
    path = tmp_path / "not_weights.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(ValueError, match="not a state_dict"):
        CAMClassifier(1, backbone="resnet18", pretrained_backbone=path)


def test_missing_backbone_file_names_the_path_and_parameter(tmp_path):
    missing = tmp_path / "nowhere" / "resnet18.pth"
    with pytest.raises(UserInputError) as info:
        CAMClassifier(1, base_width=8, blocks=(1, 1, 1, 1), pretrained_backbone=missing)
    assert str(missing) in str(info.value)
    assert "localization.pretrained_backbone" in str(info.value)


def test_unknown_backbone_lists_the_valid_ones():
    with pytest.raises(ValueError, match="localization.backbone") as info:
        CAMClassifier(1, backbone="resnet101")
    assert all(name in str(info.value) for name in BACKBONES)


def test_resnet18_cams_are_16x16_on_a_256_tile_at_output_stride_16():
    model = CAMClassifier(2, backbone="resnet18", output_stride=16).eval()
    with torch.no_grad():
        assert model.cams(torch.randn(1, 3, 256, 256)).shape == (1, 2, 16, 16)


@pytest.mark.parametrize(
    ("backbone", "output_stride"),
    [("resnet18", 8), ("resnet18", 16), ("resnet34", 16), ("resnet50", 16)],
)
def test_dilation_keeps_the_stride_32_features(backbone, output_stride):
    """Stride traded for dilation changes the sampling, not the function: the finer map,
    sampled every 32 / output_stride pixels, is the stride-32 map with the same weights."""
    torch.manual_seed(0)
    coarse = CAMClassifier(1, backbone=backbone, output_stride=32).eval()
    fine = CAMClassifier(1, backbone=backbone, output_stride=output_stride).eval()
    fine.load_state_dict(coarse.state_dict())
    step = 32 // output_stride
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        fine_features = fine.features(x)
        assert fine_features.shape[-1] == 64 // output_stride
        torch.testing.assert_close(
            fine_features[..., ::step, ::step], coarse.features(x), rtol=1e-4, atol=1e-4
        )
    assert fine.n_features == coarse.n_features == (2048 if backbone == "resnet50" else 512)


def test_rejects_bad_output_stride():
    with pytest.raises(ValueError, match="output_stride"):
        CAMClassifier(1, output_stride=4)


# --------------------------------------------------------------------------- PRC module


def test_without_a_prc_module_the_model_and_its_state_dict_are_as_before():
    model = _tiny()
    assert model.relation is None and not [k for k in model.state_dict() if k.startswith("relation.")]


def test_with_a_prc_module_cams_and_logits_are_the_refined_ones():
    torch.manual_seed(0)
    model = CAMClassifier(2, base_width=8, blocks=(1, 1, 1, 1), output_stride=16,
                          relation=RelationSpec(4, 0.1, 16)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.features(x)
        raw = torch.einsum("ck,bkhw->bchw", model.head.weight, features)
        refined = model.relation(features, raw)
        assert torch.allclose(model.cams(x), refined, atol=1e-5)
        assert not torch.allclose(refined, raw, atol=1e-3)  # the refinement did something
        assert torch.allclose(model(x), refined.mean(dim=(2, 3)) + model.head.bias, atol=1e-5)


def test_a_pretrained_backbone_loads_under_a_prc_module(resnet18_file):
    path, reference = resnet18_file
    model = CAMClassifier(1, backbone="resnet18", pretrained_backbone=path, relation=RelationSpec(8, 0.1, 16))
    assert torch.equal(model.state_dict()["conv1.weight"], reference["conv1.weight"])
    assert model.relation.project.in_channels == 512
