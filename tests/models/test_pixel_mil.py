import math

import numpy as np
import pytest
import torch

from wsss_project.models.pixel_mil import PixelMIL, mil_pool
from wsss_project.models.pixel_relation import RelationSpec


@pytest.mark.parametrize("n_layers", [2, 4])
def test_receptive_field_is_what_the_model_claims(n_layers):
    model = PixelMIL(1, width=4, n_layers=n_layers).eval()
    x = torch.randn(1, 3, 33, 33, requires_grad=True)
    model(x)[0, 0, 16, 16].backward()
    rows, cols = (x.grad.abs().sum(dim=(0, 1)) > 0).nonzero(as_tuple=True)
    assert rows.max() - rows.min() + 1 == model.receptive_field == 1 + 2 * n_layers
    assert cols.max() - cols.min() + 1 == model.receptive_field


def test_output_is_one_logit_per_pixel_and_class():
    assert PixelMIL(3, width=4, n_layers=2)(torch.randn(2, 3, 20, 24)).shape == (2, 3, 20, 24)


def test_topk_pool_is_the_mean_of_the_best_valid_pixels_and_ignores_padding():
    rng = np.random.default_rng(0)
    logits = torch.as_tensor(rng.normal(size=(2, 1, 10, 10)), dtype=torch.float32)
    valid = torch.ones(2, 10, 10, dtype=torch.bool)
    valid[1, :, 6:] = False  # second tile: 60 valid pixels
    logits[1, 0, :, 6:] = 100.0  # hot padding must not count
    pooled = mil_pool(logits, valid, "topk", 0.1, 5.0)
    for b, n_valid in ((0, 100), (1, 60)):
        values = np.sort(logits[b, 0][valid[b]].numpy())[::-1]
        k = math.ceil(0.1 * n_valid)
        assert pooled[b, 0].item() == pytest.approx(values[:k].mean(), rel=1e-6)


def test_lse_pool_lies_between_mean_and_max_and_tends_to_the_max():
    logits = torch.linspace(-2, 3, 64).reshape(1, 1, 8, 8)
    valid = torch.ones(1, 8, 8, dtype=torch.bool)
    soft = mil_pool(logits, valid, "lse", 0.1, 1.0).item()
    sharp = mil_pool(logits, valid, "lse", 0.1, 200.0).item()
    assert logits.mean().item() < soft < sharp <= 3.0 and sharp == pytest.approx(3.0, abs=0.03)


def test_unknown_pooling_names_the_parameter():
    with pytest.raises(ValueError, match="localization.mil.pooling"):
        mil_pool(torch.zeros(1, 1, 2, 2), torch.ones(1, 2, 2, dtype=torch.bool), "max", 0.1, 5.0)


def test_without_a_prc_module_the_logits_read_the_features_as_before():
    torch.manual_seed(0)
    model = PixelMIL(2, width=4, n_layers=2).eval()
    x = torch.randn(1, 3, 12, 12)
    assert model.relation is None and not [k for k in model.state_dict() if k.startswith("relation.")]
    assert torch.equal(model(x), model.classifier(model.body(x)))


def test_with_a_prc_module_the_pixel_logits_are_the_refined_ones():
    torch.manual_seed(0)
    model = PixelMIL(2, width=4, n_layers=2, relation=RelationSpec(3, 0.1, 4)).eval()
    x = torch.randn(1, 3, 12, 12)
    with torch.no_grad():
        features = model.features(x)
        refined = model.relation(features, model.classifier(features))
        assert model(x).shape == (1, 2, 12, 12)
        assert torch.allclose(model(x), refined, atol=1e-6)
    assert any(k.startswith("relation.project") for k in model.state_dict())
