"""PRC's objectives (learning/prc.py) in both localizers: IR loss and PRC module."""

import numpy as np
import pytest
import torch
from toy_tiles import IR_LOSS_OFF, PRC_MODULE_OFF, PRC_OFF, toy_tiles

from wsss_project.contracts import HEATMAP_MAX
from wsss_project.learning import prc
from wsss_project.learning.cam_training import build_cam_classifier
from wsss_project.learning.localizers import LOCALIZERS
from wsss_project.learning.mil_training import build_pixel_mil
from wsss_project.learning.prc import (
    CLASSIFICATION_TERM,
    CONSTRAINT_TERM,
    IR_TERM,
    REFINED_TERM,
    IrSettings,
    build_decoder,
    constraint_loss,
    ir_settings,
    peak_normalised,
    prc_ir_losses,
    prc_settings,
)
from wsss_project.utils.seed import seed_everything

CPU = torch.device("cpu")
MIL = {"width": 8, "n_layers": 3, "input_scale": 0.5, "pooling": "topk", "topk_fraction": 0.1, "lse_r": 5.0,
       "steps": 12, "max_passes": 100, "batch_size": 4, "lr": 1e-2, "weight_decay": 0.0, "warmup_fraction": 0.1,
       "pos_weight": "balanced", "log_every": 4}
CAM = {"backbone": "small", "base_width": 8, "blocks": [1, 1, 1, 1], "output_stride": 16, "pretrained_backbone": None,
       "epochs": 2, "batch_size": 4, "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "lr_step_size": 5,
       "lr_gamma": 0.1, "pos_weight": "balanced"}
SHARED = {"seed": 0, "augment": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
          "tta_flips": False, "inference_batch_size": 4}
PARAMS = {"mil": {**SHARED, "method": "mil", "mil": MIL, **CAM, **PRC_OFF},
          "cam_classifier": {**SHARED, "method": "cam_classifier", "mil": MIL, **CAM, **PRC_OFF}}
IR_ON = {**IR_LOSS_OFF, "weight": 0.5, "decoder_width": 8}
PRC_ON = {**PRC_MODULE_OFF, "enabled": True, "projection_dim": 4, "key_grid": 8, "refined_loss_weight": 0.7,
          "constraint_weight": 0.3}
HISTORY_BEFORE_PRC = {"mil": {"step", "loss", "accuracy", "lr", "tiles_per_s"},
                      "cam_classifier": {"epoch", "loss", "accuracy", "lr", "seconds"}}


def _data(n=8):
    tiles, _, _, index = toy_tiles(n)
    images = np.stack([tiles[t] for t in index["tile_id"]])
    sizes = np.full((n, 2), images.shape[1])
    sizes[0] = (40, 50)  # one border tile: the rest is padding
    return images, index[["landslide"]].to_numpy(np.float32), sizes


def _fit(method, **sections):
    images, labels, sizes = _data()
    model, history = LOCALIZERS[method].fit(images, labels, sizes, {**PARAMS[method], **sections}, CPU)
    return model, history


def _models_and_features(method):
    """An untrained localizer of `method`, its features of a random batch, and the batch."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    if method == "mil":
        model = build_pixel_mil(1, MIL)
        return model, model.features(torch.nn.functional.interpolate(x, scale_factor=0.5)), x, model.body[0].weight
    model = build_cam_classifier(1, PARAMS[method])
    return model, model.features(x), x, model.conv1.weight


@pytest.mark.parametrize("method", ["mil", "cam_classifier"])
def test_the_ir_loss_alone_sends_a_gradient_to_the_first_layer_of_the_backbone(method):
    model, features, x, first_layer = _models_and_features(method)
    stride = 2.0 if method == "mil" else 16.0
    decoder = build_decoder(features.shape[1], stride, IrSettings(1.0, 8, "l1"))
    loss, refined_logits, terms = prc_ir_losses(
        features=features, raw_cam=None, raw_loss=torch.zeros(()), refine=None, classification_loss=None,
        unit=torch.sigmoid, target=x, decoder=decoder, prc=prc_settings(PRC_OFF), ir=IrSettings(1.0, 8, "l1"),
    )
    loss.backward()  # no classification loss at all: every gradient comes from the reconstruction
    assert first_layer.grad is not None and first_layer.grad.abs().sum() > 0
    head = model.classifier.weight if method == "mil" else model.head.weight
    assert head.grad is None  # the classifier itself is not what IR trains
    assert refined_logits is None and set(terms) == {IR_TERM, CLASSIFICATION_TERM}
    assert loss.item() == pytest.approx(terms[IR_TERM].item())


@pytest.mark.parametrize("method", ["mil", "cam_classifier"])
def test_weight_0_builds_no_decoder_and_the_other_ir_settings_change_nothing(method, monkeypatch):
    reference_model, reference_history = _fit(method)

    def no_decoder(*args, **kwargs):
        raise AssertionError("a decoder was built at ir_loss.weight 0")

    monkeypatch.setattr(prc, "ReconstructionDecoder", no_decoder)
    inert = {**IR_LOSS_OFF, "decoder_width": 3, "distance": "mse"}
    model, history = _fit(method, ir_loss=inert)
    assert set(history[0]) == HISTORY_BEFORE_PRC[method]  # no new columns either
    assert [r["loss"] for r in history] == [r["loss"] for r in reference_history]
    state, reference = model.state_dict(), reference_model.state_dict()
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[k], reference[k]) for k in state)


@pytest.mark.parametrize("method", ["mil", "cam_classifier"])
def test_with_ir_on_the_loss_adds_the_weighted_reconstruction_and_training_changes(method):
    off_model, _ = _fit(method)
    model, history = _fit(method, ir_loss=IR_ON)
    for record in history:
        assert record["loss"] == pytest.approx(record[CLASSIFICATION_TERM] + 0.5 * record[IR_TERM], rel=1e-5)
    first = "body.0.weight" if method == "mil" else "conv1.weight"
    assert not torch.equal(model.state_dict()[first], off_model.state_dict()[first])
    assert not [k for k in model.state_dict() if "decoder" in k]  # the decoder is not saved


@pytest.mark.parametrize("method", ["mil", "cam_classifier"])
def test_with_prc_on_the_loss_has_its_terms_and_the_affinity_is_trained(method):
    model, history = _fit(method, prc_module=PRC_ON)
    for record in history:
        expected = record[CLASSIFICATION_TERM] + 0.7 * record[REFINED_TERM] + 0.3 * record[CONSTRAINT_TERM]
        assert record["loss"] == pytest.approx(expected, rel=1e-5)
    seed_everything(0)
    untrained = LOCALIZERS[method].build(1, {**PARAMS[method], "prc_module": PRC_ON})
    assert not torch.equal(model.relation.project.weight, untrained.relation.project.weight.to(CPU))


@pytest.mark.parametrize("method", ["mil", "cam_classifier"])
def test_with_both_on_the_saved_localizer_writes_heatmaps_in_the_contract(method):
    params = {**PARAMS[method], "ir_loss": IR_ON, "prc_module": PRC_ON}
    model, history = _fit(method, ir_loss=IR_ON, prc_module=PRC_ON)
    assert {IR_TERM, REFINED_TERM, CONSTRAINT_TERM, CLASSIFICATION_TERM} <= set(history[0])
    localizer = LOCALIZERS[method]
    rebuilt = localizer.build(1, params)
    rebuilt.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})  # strict: PRC keys saved
    images, _, sizes = _data()
    heat = localizer.heatmaps(rebuilt.eval(), images, sizes, params, CPU)
    assert heat.dtype == np.uint8 and heat.shape == (len(images), 1, *images.shape[1:3])
    assert heat[0, 0, 40:].max() == 0 and heat[0, 0, :, 50:].max() == 0  # 0 outside the scene part
    assert heat.max() <= HEATMAP_MAX and heat.max() > 0
    np.testing.assert_array_equal(heat, localizer.heatmaps(model, images, sizes, params, CPU))
    probs = localizer.tile_probabilities(rebuilt, images, sizes, params, CPU)
    assert probs.shape == (len(images), 1) and ((probs >= 0) & (probs <= 1)).all()


def test_the_constraint_pulls_the_raw_map_only():
    raw = torch.rand(1, 1, 4, 4, requires_grad=True)
    refined = torch.rand(1, 1, 4, 4, requires_grad=True)
    constraint_loss(raw, refined).backward()
    assert raw.grad.abs().sum() > 0 and refined.grad is None


def test_peak_normalised_maps_reach_one_and_an_empty_map_stays_zero():
    cam = torch.stack([torch.tensor([[-1.0, 2.0], [4.0, 0.0]]), torch.zeros(2, 2)])[:, None]
    unit = peak_normalised(cam)
    assert torch.equal(unit[0, 0], torch.tensor([[0.0, 0.5], [1.0, 0.0]]))
    assert torch.equal(unit[1, 0], torch.zeros(2, 2))


def test_a_missing_section_or_key_is_named():
    with pytest.raises(KeyError, match="localization.ir_loss"):
        ir_settings({})
    with pytest.raises(Exception, match="localization.prc_module.temperature"):
        prc_settings({"prc_module": {k: v for k, v in PRC_MODULE_OFF.items() if k != "temperature"}})
