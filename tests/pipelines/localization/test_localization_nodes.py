import numpy as np
import pytest
from toy_tiles import PRC_OFF, toy_tiles

from wsss_project.pipelines.localization.nodes import generate_cams, train_cam_model

LOCALIZATION = {
    "method": "cam_classifier", "backbone": "small", "base_width": 8, "blocks": [1, 1, 1, 1], "output_stride": 16, "pretrained_backbone": None,
    "epochs": 2, "batch_size": 4, "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "lr_step_size": 5,
    "lr_gamma": 0.1, "augment": True, "pos_weight": "balanced", "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225], "tta_flips": False, "inference_batch_size": 3,
    **PRC_OFF,
}


MIL = {"width": 4, "n_layers": 2, "input_scale": 1.0, "pooling": "topk", "topk_fraction": 0.1, "lse_r": 5.0,
       "steps": 4, "max_passes": 100, "batch_size": 2, "lr": 1e-2, "weight_decay": 0.0, "warmup_fraction": 0.1, "pos_weight": "balanced",
       "log_every": 2}


def test_trains_on_train_labels_only_and_writes_one_cam_per_tile_and_class():
    tiles, _, _, index = toy_tiles(6)
    index.loc[index.index[-2:], "split"] = "test"
    state, history, curves = train_cam_model(tiles, index, LOCALIZATION, ["landslide"], 0, "cpu")
    assert list(history["epoch"]) == [1, 2] and "localization.loss" in curves
    cams = generate_cams(tiles, index, state, LOCALIZATION, ["landslide"], "cpu")
    assert set(cams) == {f"landslide/{t}" for t in index["tile_id"]}  # test tiles too, for figures
    assert all(c.dtype == np.uint8 and c.shape == (64, 64) for c in cams.values())


def test_same_seed_same_cams():
    tiles, _, _, index = toy_tiles(4)
    runs = [generate_cams(tiles, index, train_cam_model(tiles, index, LOCALIZATION, ["landslide"], 3, "cpu")[0],
                          LOCALIZATION, ["landslide"], "cpu") for _ in range(2)]
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_classifier_scores_per_split_use_labels_only():
    from wsss_project.pipelines.localization.nodes import score_classifier

    tiles, _, _, index = toy_tiles(8)
    index.loc[index.index[-4:], "split"] = "test"
    state, _, _ = train_cam_model(tiles, index, {**LOCALIZATION, "epochs": 4}, ["landslide"], 0, "cpu")
    scores = score_classifier(tiles, index, state, LOCALIZATION, ["landslide"], "cpu")
    assert set(scores) == {f"localization.{s}.landslide.{m}" for s in ("train", "test") for m in ("auc", "accuracy")}
    assert all(0.0 <= v["value"] <= 1.0 for v in scores.values())


def test_border_cam_is_zero_over_padding_and_rescaled_in_float_before_quantising():
    import torch

    from wsss_project.learning.cam_training import cams_to_uint8

    raw = torch.zeros(1, 1, 8, 8)
    raw[0, 0, :, 6:] = 100.0  # hot padding column (valid width 5)
    raw[0, 0, 2, 2] = 10.0  # scene peak
    raw[0, 0, 3, 3] = 3.3
    valid = torch.zeros(1, 8, 8, dtype=torch.bool)
    valid[:, :, :5] = True
    out = cams_to_uint8(raw, (8, 8), valid)[0, 0].numpy()
    assert (out[:, 5:] == 0).all() and out[2, 2] == 255 and out.dtype == np.uint8
    # Float rescale: round(3.3 / 10 * 255) = 84. Quantising over the padded tile first (peak 100)
    # and rescaling the uint8 map gives round(round(8.415) / round(25.5) * 255) = 78.
    assert out[3, 3] == 84


def test_mil_method_writes_sigmoid_heatmaps_zero_over_padding():
    tiles, _, _, index = toy_tiles(4)
    index.loc[index.index[0], "width"] = 40
    params = {**LOCALIZATION, "method": "mil", "mil": MIL}
    state, history, curves = train_cam_model(tiles, index, params, ["landslide"], 0, "cpu")
    assert list(history["step"]) == [2, 4] and "localization.loss" in curves
    cams = generate_cams(tiles, index, state, params, ["landslide"], "cpu")
    first = cams[f"landslide/{index.tile_id.iloc[0]}"]
    assert first.dtype == np.uint8 and not first[:, 40:].any()


def test_unknown_method_names_the_parameter():
    import pytest

    tiles, _, _, index = toy_tiles(2)
    with pytest.raises(ValueError, match="localization.method"):
        train_cam_model(tiles, index, {**LOCALIZATION, "method": "gradcam"}, ["landslide"], 0, "cpu")


REFINED = {"usr": {**PRC_OFF["usr"], "enabled": True, "max_grid": 8},
           "vpe": {**PRC_OFF["vpe"], "enabled": True, "background_score": 0.2}}


@pytest.mark.parametrize("method", ["mil", "cam_classifier"])
def test_usr_and_vpe_refine_any_localizer_into_the_cams_contract_deterministically(method):
    tiles, _, _, index = toy_tiles(6)
    index.loc[index.index[-2:], "split"] = "test"
    index.loc[index.index[0], "width"] = 40  # a border tile: its padding must stay 0
    localization = {**LOCALIZATION, "method": method, "mil": MIL}
    state = train_cam_model(tiles, index, localization, ["landslide"], 0, "cpu")[0]
    plain = generate_cams(tiles, index, state, localization, ["landslide"], "cpu")
    runs = [generate_cams(tiles, index, state, {**localization, **REFINED}, ["landslide"], "cpu") for _ in range(2)]
    assert set(runs[0]) == set(plain)
    assert all(c.dtype == np.uint8 and c.shape == (64, 64) for c in runs[0].values())
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in plain)
    assert any(not np.array_equal(runs[0][k], plain[k]) for k in plain)  # the switches do something
    assert (runs[0][f"landslide/{index['tile_id'].iloc[0]}"][:, 40:] == 0).all()


def test_vpe_prototypes_come_from_train_tiles_only():
    """Test tiles neither update the prototypes nor change any train tile's refined CAM."""
    tiles, _, _, index = toy_tiles(6)
    index.loc[index.index[-2:], "split"] = "test"
    localization = {**LOCALIZATION, **REFINED}
    state = train_cam_model(tiles, index, localization, ["landslide"], 0, "cpu")[0]
    before = generate_cams(tiles, index, state, localization, ["landslide"], "cpu")
    altered = dict(tiles)
    for tile_id in index["tile_id"].iloc[-2:]:
        altered[tile_id] = 255 - np.asarray(tiles[tile_id])  # test tiles replaced by other images
    after = generate_cams(altered, index, state, localization, ["landslide"], "cpu")
    train_keys = [f"landslide/{t}" for t in index["tile_id"].iloc[:-2]]
    assert all(np.array_equal(before[k], after[k]) for k in train_keys)
