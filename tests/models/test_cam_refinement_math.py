"""Seed 003's USR and VPE math (models/cam_refinement.py) against hand-computed values."""

import math

import pytest
import torch

from wsss_project.models.cam_refinement import (
    MomentumPrototypes,
    argmax_regions,
    attention_discrepancies,
    diffuse,
    diffusion_matrix,
    joint_affinity,
    prototype_cam,
    refining_map,
    reliable_attention_gate,
    seed_positions,
    tokens,
)


def test_joint_affinity_is_the_sigmoid_of_the_shifted_scaled_cosine_of_centred_tokens():
    # Mean token (0, 0): the units are (1, 0), (1, 0), (-1, 0): cosines +1 within the pair, -1 across.
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-2.0, 0.0]])
    affinity = joint_affinity(features, temperature=0.1, margin=0.5)
    same, across = 1 / (1 + math.exp(-5.0)), 1 / (1 + math.exp(15.0))
    expected = torch.tensor([[same, same, across], [same, same, across], [across, across, same]])
    assert torch.allclose(affinity, expected, atol=1e-6)


def test_tokens_flatten_the_grid_row_major():
    features = torch.arange(12.0).reshape(3, 2, 2)  # K = 3 channels on a 2 x 2 grid
    assert tokens(features).tolist()[1] == [1.0, 5.0, 9.0]  # position (0, 1)


def test_eq13_keeps_the_attention_maps_closer_to_a_cd_than_the_mean_discrepancy():
    affinity = torch.tensor([[0.9, 0.2], [0.2, 0.8]])
    attentions = torch.stack([affinity, affinity + 0.1, affinity + 0.5])
    discrepancies = attention_discrepancies(affinity, attentions)
    assert torch.allclose(discrepancies, torch.tensor([0.0, 0.4, 2.0]), atol=1e-6)  # 4 entries x |offset|
    assert reliable_attention_gate(discrepancies).tolist() == [True, True, False]  # mean 0.8
    # eq. 14: A_cd times the mean of the two kept maps, A_cd + 0.05
    assert torch.allclose(refining_map(affinity, attentions), affinity * (affinity + 0.05), atol=1e-6)


def test_eq14_falls_back_to_a_cd_without_attentions_or_when_none_is_kept():
    affinity = torch.tensor([[0.9, 0.2], [0.2, 0.8]])
    assert torch.equal(refining_map(affinity, None), affinity)
    same = torch.stack([affinity + 0.3, affinity - 0.3])  # equal discrepancies: none is below the mean
    assert torch.equal(refining_map(affinity, same), affinity)


# A 3-node chain 0 - 1 - 2: columns sums (2, 3, 2), then rows normalised, then symmetrised.
CHAIN = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
CHAIN_SYMMETRIC = torch.tensor([[0.6, 0.3875, 0.0], [0.3875, 0.25, 0.3875], [0.0, 0.3875, 0.6]])


def test_eq15_normalises_columns_then_rows_symmetrises_and_takes_the_matrix_power():
    assert torch.allclose(diffusion_matrix(CHAIN, 1), CHAIN_SYMMETRIC, atol=1e-6)
    cubed = diffusion_matrix(CHAIN, 3)
    assert torch.allclose(cubed, CHAIN_SYMMETRIC @ CHAIN_SYMMETRIC @ CHAIN_SYMMETRIC, atol=1e-6)
    assert torch.allclose(cubed, cubed.T, atol=1e-6)


def test_eq15_diffuses_a_one_node_cam_along_the_chain():
    squared = diffusion_matrix(CHAIN, 2)
    refined = diffuse(torch.tensor([[1.0, 0.0, 0.0]]), squared)
    # column 0 of S^2: (0.6^2 + 0.3875^2, 0.3875 * 0.6 + 0.25 * 0.3875, 0.3875^2)
    assert torch.allclose(refined, torch.tensor([[0.51015625, 0.329375, 0.15015625]]), atol=1e-6)


def test_eq16_argmax_against_a_constant_background_channel():
    cams = torch.tensor([[0.9, 0.8, 0.6, 0.0], [0.95, 0.1, 0.7, 0.3]])
    assert argmax_regions(cams, 0.5).tolist() == [2, 1, 2, 0]


def test_eq17_seeds_are_the_top_fraction_inside_the_class_argmax_region_only():
    cams = torch.tensor([[0.9, 0.8, 0.6, 0.0], [0.95, 0.1, 0.7, 0.3]])
    regions = argmax_regions(cams, 0.5)
    # class 0's strongest activation (0.9, token 0) belongs to class 1's region: not a class-0 seed
    assert seed_positions(cams[0], regions == 1, 1.0).tolist() == [1]
    assert seed_positions(cams[1], regions == 2, 0.5).tolist() == [0]
    assert seed_positions(cams[1], regions == 2, 1.0).tolist() == [0, 2]
    assert seed_positions(torch.zeros(4), torch.ones(4, dtype=torch.bool), 0.5).numel() == 0  # only non-zero


def test_eq18_momentum_update_over_two_steps():
    prototypes = MomentumPrototypes(n_classes=2, momentum=0.9)
    prototypes.update(0, torch.tensor([[1.0, 0.0], [3.0, 0.0]]))  # first: the seeds' mean (2, 0)
    assert torch.allclose(prototypes.prototypes[0], torch.tensor([2.0, 0.0]))
    prototypes.update(0, torch.tensor([[0.0, 4.0]]))
    assert torch.allclose(prototypes.prototypes[0], torch.tensor([1.8, 0.4]))  # 0.9 (2, 0) + 0.1 (0, 4)
    prototypes.update(1, torch.zeros(0, 2))  # no seeds: no update
    assert prototypes.prototypes[1] is None and prototypes.updates == [2, 0]
    with pytest.raises(ValueError, match="no prototype"):
        prototypes.similarity(1, torch.ones(3, 2))


def test_eq19_20_prototype_cam_is_zero_where_the_cosine_is_negative_and_keeps_the_tile_peak():
    prototypes = MomentumPrototypes(n_classes=1, momentum=0.9)
    prototypes.update(0, torch.tensor([[1.0, 0.0]]))
    similarity = prototypes.similarity(0, torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    assert torch.allclose(similarity, torch.tensor([1.0, 0.0, 0.0, 1 / math.sqrt(2)]), atol=1e-6)
    cam = torch.tensor([[0.8, 0.9, 0.5, 0.6]])
    out = prototype_cam(cam, similarity.reshape(1, 4), torch.ones(1, 4, dtype=torch.bool))
    # product (0.8, 0, 0, 0.3): min-max onto [0, peak 0.9]
    assert torch.allclose(out, torch.tensor([[0.9, 0.0, 0.0, 0.3375]]), atol=1e-6)


def test_eq20_norm_is_taken_over_the_valid_part_and_zero_outside():
    cam = torch.tensor([[0.2, 0.4, 1.0]])
    valid = torch.tensor([[True, True, False]])
    out = prototype_cam(cam, torch.ones(1, 3), valid)
    assert torch.allclose(out, torch.tensor([[0.0, 0.4, 0.0]]), atol=1e-6)  # min 0.2 -> 0, max 0.4 -> peak 0.4
