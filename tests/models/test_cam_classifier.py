"""CAMClassifier: shapes, CAM definition (APSAM eq. 1), weight loading."""

from __future__ import annotations

import logging

import pytest
import torch
import torchvision

from wsss_project.models.cam_classifier import CAMClassifier, load_backbone_weights


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


def test_loads_local_torchvision_resnet18_backbone(tmp_path, caplog):
    path = tmp_path / "resnet18.pth"
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), path)
    with caplog.at_level(logging.INFO):
        model = CAMClassifier(1, base_width=64, blocks=(2, 2, 2, 2), pretrained_backbone=path)
    n_backbone = sum(
        not k.startswith("fc.") and not k.endswith("num_batches_tracked")
        for k in reference.state_dict()
    )
    assert f"Loaded {n_backbone} of" in caplog.text
    assert torch.equal(model.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert model.head.weight.shape == (1, 512)  # the ImageNet fc is never copied


def test_backbone_loading_counts_only_matching_shapes(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": torchvision.models.resnet18(weights=None).state_dict()}, path)
    assert load_backbone_weights(_tiny(1), path) == 0  # width 8 != 64: nothing fits
    model = CAMClassifier(1, base_width=64, blocks=(1, 1, 1, 1))
    assert 0 < load_backbone_weights(model, path) < len(model.state_dict())


def test_missing_backbone_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "resnet18.pth"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        CAMClassifier(1, base_width=8, blocks=(1, 1, 1, 1), pretrained_backbone=missing)


def test_rejects_bad_output_stride():
    with pytest.raises(ValueError, match="output_stride"):
        CAMClassifier(1, output_stride=4)
