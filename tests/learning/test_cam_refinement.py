"""USR and VPE over tiles (learning/cam_refinement.py): grids, valid parts, prototypes from positive tiles."""

import numpy as np
import pytest
import torch
from toy_tiles import USR_OFF, VPE_OFF

from wsss_project.errors import UserInputError
from wsss_project.learning.cam_refinement import CamRefiner, refinement_enabled

USR_ON = {**USR_OFF, "enabled": True, "max_grid": 8}
VPE_ON = {**VPE_OFF, "enabled": True, "seed_fraction": 0.5}
SIZE = 16


def _two_region_features() -> torch.Tensor:
    """(1, 2, 8, 8): left half (1, 0), right half (0, 1) — two regions the affinity must keep apart."""
    features = torch.zeros(1, 2, 8, 8)
    features[0, 0, :, :4] = 1.0
    features[0, 1, :, 4:] = 1.0
    return features


def _hot_spot() -> np.ndarray:
    heatmap = np.zeros((1, 1, SIZE, SIZE), dtype=np.uint8)
    heatmap[0, 0, 6:10, 2:4] = 255  # a few hot pixels inside the left region
    return heatmap


def test_refinement_is_off_unless_usr_or_vpe_is_enabled():
    assert not refinement_enabled({"usr": USR_OFF, "vpe": VPE_OFF})
    assert refinement_enabled({"usr": USR_ON, "vpe": VPE_OFF}) and refinement_enabled({"usr": USR_OFF, "vpe": VPE_ON})


def test_usr_spreads_a_hot_spot_over_its_feature_region_and_not_across():
    refiner = CamRefiner(USR_ON, VPE_OFF, n_classes=1)
    out = refiner.refine_batch(_hot_spot(), _two_region_features(), np.array([[SIZE, SIZE]]))[0, 0]
    assert out.dtype == np.uint8 and out.shape == (SIZE, SIZE)
    left, right = out[:, : SIZE // 2 - 2], out[:, SIZE // 2 + 2 :]  # away from the bilinear seam
    assert left.min() > 0 and right.max() == 0  # filled its own region, nothing leaked across
    assert (out[:, :2] > 0).all()  # reached pixels the plain CAM left at 0
    assert refiner.seconds_per_tile().keys() == {"usr"}


def test_usr_and_vpe_write_zero_over_the_padding_of_a_border_tile():
    refiner = CamRefiner(USR_ON, VPE_ON, n_classes=1)
    heatmap = np.full((1, 1, SIZE, SIZE), 200, dtype=np.uint8)
    features = _two_region_features()
    refiner.learn_from_batch(heatmap, features, np.array([[SIZE, SIZE]]), np.array([[1]]))
    out = refiner.refine_batch(heatmap, features, np.array([[SIZE, 10]]))[0, 0]
    assert (out[:, 10:] == 0).all() and out[:, :10].max() > 0


def test_vpe_prototypes_learn_only_from_tiles_labelled_positive():
    refiner = CamRefiner(USR_OFF, VPE_ON, n_classes=1)
    features = _two_region_features()
    refiner.learn_from_batch(_hot_spot(), features, np.array([[SIZE, SIZE]]), np.array([[0]]))
    with pytest.raises(UserInputError, match="localization.vpe"):
        refiner.check_prototypes(["landslide"])
    refiner.learn_from_batch(_hot_spot(), features, np.array([[SIZE, SIZE]]), np.array([[1]]))
    refiner.check_prototypes(["landslide"])
    assert torch.allclose(refiner.prototypes.prototypes[0], torch.tensor([1.0, 0.0]))  # the left region's token


def test_vpe_suppresses_the_cam_where_features_differ_from_the_prototype():
    refiner = CamRefiner(USR_OFF, VPE_ON, n_classes=1)
    features = _two_region_features()
    refiner.learn_from_batch(_hot_spot(), features, np.array([[SIZE, SIZE]]), np.array([[1]]))
    flat = np.full((1, 1, SIZE, SIZE), 180, dtype=np.uint8)  # over-activated everywhere
    out = refiner.refine_batch(flat, features, np.array([[SIZE, SIZE]]))[0, 0]
    assert (out[:, :6] == 180).all()  # prototype-like tokens keep the tile's peak
    assert (out[:, 10:] == 0).all()  # orthogonal tokens: cos 0 -> S^2 = 0
    assert refiner.seconds_per_tile().keys() == {"vpe"}


def test_attention_maps_are_pooled_on_both_sides_like_the_features():
    from wsss_project.learning.cam_refinement import _pool_attention

    identity = torch.eye(16)[None]  # every token of a 4 x 4 grid attends to itself
    pooled = _pool_attention(identity, (4, 4), (2, 2))
    assert torch.allclose(pooled, 0.25 * torch.eye(4)[None])  # a 2 x 2 block: 1/4 of its keys are itself
    shifted = torch.zeros(1, 16, 16)
    shifted[0, 0, 15] = 1.0  # token (0, 0) attends to (3, 3): block 0 -> block 3
    assert _pool_attention(shifted, (4, 4), (2, 2))[0, 0, 3] == pytest.approx(1 / 16)


def test_usr_uses_the_kept_attention_maps():
    refiner = CamRefiner({**USR_ON, "max_grid": 8}, VPE_OFF, n_classes=1)
    features = torch.ones(1, 2, 8, 8) + 0.01 * torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    plain = refiner.refine_batch(_hot_spot(), features, np.array([[SIZE, SIZE]]))
    # two maps: attention to oneself only (closer to A_cd, whose diagonal is ~1: kept) and uniform (dropped)
    local = torch.stack([torch.eye(64), torch.full((64, 64), 1 / 64)])[None]
    with_attention = refiner.refine_batch(_hot_spot(), features, np.array([[SIZE, SIZE]]), local)
    assert not np.array_equal(plain, with_attention)
    # self-attention only keeps the hot spot where it was: nothing spreads to the far corner
    assert with_attention[0, 0, -1, -1] == 0 and with_attention[0, 0, 7, 3] > 0
