"""ResUNet: output resolution, size checks, state_dict round trip."""

from __future__ import annotations

import pytest
import torch

from wsss_project.models.resunet import ResUNet


@pytest.mark.parametrize(("depth", "size"), [(1, (6, 10)), (2, (32, 48)), (3, (64, 40))])
def test_logits_at_input_resolution(depth, size):
    model = ResUNet(3, n_outputs=4, base_width=4, depth=depth).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 4, *size)


def test_rejects_size_not_divisible_by_two_to_the_depth():
    with pytest.raises(ValueError, match="divisible by 8"):
        ResUNet(3, 2, base_width=4, depth=3)(torch.randn(1, 3, 36, 36))


def test_gradients_reach_the_stem():
    model = ResUNet(3, 2, base_width=4, depth=2)
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    assert model.stem.body[0].weight.grad.abs().sum() > 0


def test_state_dict_round_trip_weights_only(tmp_path):
    torch.manual_seed(0)
    model = ResUNet(3, 2, base_width=4, depth=2).eval()
    path = tmp_path / "resunet.pt"
    torch.save(model.state_dict(), path)
    other = ResUNet(3, 2, base_width=4, depth=2)
    other.load_state_dict(torch.load(path, weights_only=True))
    other.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), other(x))


def test_a_body_loads_into_a_model_with_another_head_and_keeps_that_head():
    source, target = ResUNet(n_outputs=5, base_width=4, depth=2), ResUNet(n_outputs=2, base_width=4, depth=2)
    head_before = target.head[-1].weight.detach().clone()
    target.load_body(source.body_state_dict())
    for key, value in source.body_state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    assert torch.equal(target.head[-1].weight, head_before)


def test_a_body_of_another_architecture_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        ResUNet(n_outputs=2, base_width=4, depth=2).load_body(ResUNet(n_outputs=2, base_width=8, depth=2).body_state_dict())
    with pytest.raises(ValueError, match="missing"):
        ResUNet(n_outputs=2, base_width=4, depth=3).load_body(ResUNet(n_outputs=2, base_width=4, depth=2).body_state_dict())
