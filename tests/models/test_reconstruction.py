import pytest
import torch

from wsss_project.models.reconstruction import ReconstructionDecoder, upsamplings_for


@pytest.mark.parametrize(("stride", "stages"), [(1, 0), (1.0, 0), (2, 1), (1.5, 1), (8, 3), (16, 4), (32, 5)])
def test_one_x2_stage_per_halving_of_the_feature_grid(stride, stages):
    assert upsamplings_for(stride) == stages


@pytest.mark.parametrize(("grid", "stride", "size"), [(4, 16, (64, 64)), (32, 2, (64, 64)), (5, 16, (70, 80))])
def test_the_decoder_returns_an_image_at_the_tile_size(grid, stride, size):
    decoder = ReconstructionDecoder(8, 4, upsamplings_for(stride))
    out = decoder(torch.randn(2, 8, grid, grid), size)
    assert out.shape == (2, 3, *size)


def test_the_decoder_is_small_and_its_stages_follow_the_stride():
    decoder = ReconstructionDecoder(256, 32, upsamplings_for(16))
    assert sum(isinstance(m, torch.nn.Upsample) for m in decoder.modules()) == 4
    assert sum(isinstance(m, torch.nn.Conv2d) for m in decoder.modules()) == 6  # in, 4 stages, out
