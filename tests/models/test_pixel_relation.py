import math

import pytest
import torch

from wsss_project.models.pixel_relation import (
    PixelRelation,
    RelationSpec,
    affinity_from_embeddings,
    pool_to_grid,
    propagate,
)


def _identity_relation(channels: int, temperature: float, key_grid: int) -> PixelRelation:
    """A PRC module whose projection is the identity, so the affinity is the features' own."""
    relation = PixelRelation(channels, RelationSpec(channels, temperature, key_grid))
    with torch.no_grad():
        relation.project.weight.copy_(torch.eye(channels)[:, :, None, None])
        relation.project.bias.zero_()
    return relation


def test_every_affinity_row_sums_to_one_and_is_non_negative():
    torch.manual_seed(0)
    relation = PixelRelation(8, RelationSpec(4, 0.1, 3))
    affinity = relation.affinity(torch.randn(2, 8, 7, 5))
    assert affinity.shape == (2, 35, 9)  # every pixel a query, keys pooled to 3 x 3
    assert torch.allclose(affinity.sum(dim=-1), torch.ones(2, 35), atol=1e-6)
    assert (affinity >= 0).all()


def test_refined_cam_is_a_times_cam_on_a_hand_example():
    # Three positions in a row: the first two alike (embedding (1, 0)), the third orthogonal.
    features = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).reshape(1, 2, 1, 3)
    cam = torch.tensor([3.0, 1.0, 0.0]).reshape(1, 1, 1, 3)
    relation = _identity_relation(2, temperature=1.0, key_grid=8)
    e = math.e
    # cos = 1 between the first two, 0 with the third: rows softmax([1, 1, 0]) and softmax([0, 0, 1]).
    expected_a = torch.tensor([[e, e, 1.0], [e, e, 1.0], [1.0, 1.0, e]])
    expected_a = expected_a / expected_a.sum(dim=1, keepdim=True)
    assert torch.allclose(relation.affinity(features)[0], expected_a, atol=1e-6)
    refined = relation(features, cam)
    expected = expected_a @ torch.tensor([3.0, 1.0, 0.0])
    assert torch.allclose(refined.flatten(), expected, atol=1e-6)
    assert refined[0, 0, 0, 0].item() == pytest.approx((4 * e) / (2 * e + 1), rel=1e-6)


def test_a_lower_temperature_propagates_less_from_unlike_pixels():
    features = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).reshape(1, 2, 1, 3)
    cam = torch.tensor([3.0, 1.0, 0.0]).reshape(1, 1, 1, 3)
    warm = _identity_relation(2, 1.0, 8)(features, cam)[0, 0, 0, 2]
    cold = _identity_relation(2, 0.1, 8)(features, cam)[0, 0, 0, 2]
    assert cold < warm  # the unlike third pixel borrows less of its neighbours' activation


def test_a_uniform_cam_stays_uniform_and_refinement_stays_within_the_cam_range():
    torch.manual_seed(1)
    relation = PixelRelation(6, RelationSpec(3, 0.2, 4))
    features = torch.randn(1, 6, 9, 9)
    assert torch.allclose(relation(features, torch.full((1, 2, 9, 9), 0.7)), torch.full((1, 2, 9, 9), 0.7), atol=1e-6)
    cam = torch.randn(1, 2, 9, 9)
    refined = relation(features, cam)
    pooled = pool_to_grid(cam, 4)
    assert refined.amin() >= pooled.amin() - 1e-6 and refined.amax() <= pooled.amax() + 1e-6


def test_keys_are_pooled_to_the_grid_and_the_cam_with_them():
    torch.manual_seed(2)
    relation = PixelRelation(4, RelationSpec(4, 0.5, 2))
    features, cam = torch.randn(1, 4, 4, 6), torch.randn(1, 1, 4, 6)
    affinity = relation.affinity(features)
    assert affinity.shape == (1, 24, 4)
    values = torch.nn.functional.adaptive_avg_pool2d(cam, (2, 2))
    assert torch.allclose(relation(features, cam), propagate(affinity, values, (4, 6)), atol=1e-6)
    assert pool_to_grid(cam, 6) is cam  # a grid that fits is left as it is


def test_affinity_ignores_the_scale_of_the_embeddings():
    q = torch.randn(1, 3, 2, 2)
    assert torch.allclose(affinity_from_embeddings(q, q, 0.3), affinity_from_embeddings(5 * q, q, 0.3), atol=1e-6)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="temperature"):
        PixelRelation(4, RelationSpec(4, 0.0, 2))
