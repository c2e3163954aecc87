from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from toy_tiles import SEGMENTATION, toy_tiles

from wsss_project.learning.segmentation_training import build_resunet
from wsss_project.pipelines.segmentation_training import nodes
from wsss_project.pipelines.segmentation_training.nodes import (
    encode_prediction,
    ignore_outside_scene,
    predict_scenes,
    train_segmentation_model,
)


def test_predictions_cover_each_test_scene_at_its_original_size():
    tiles, masks, _, index = toy_tiles(4)
    # scene3 is a 64x100 test scene cut into two overlapping-free 64x64 tiles (the second padded).
    extra = np.zeros((64, 64, 3), np.uint8)
    tiles["scene3__0_64"] = extra
    index = pd.concat([index, pd.DataFrame([{**index.iloc[3].to_dict(), "tile_id": "scene3__0_64", "col": 64, "width": 36}])])
    index.loc[index.scene_id == "scene3", "split"] = "test"
    index.loc[index.scene_id == "scene3", "width"] = [64, 36]
    scenes = pd.DataFrame({"scene_id": ["scene3"], "source": ["toy"], "height": [64], "width": [100], "split": ["test"]})
    state, history, _ = train_segmentation_model(tiles, masks, index, SEGMENTATION, ["landslide"], 0, "cpu")
    predictions = predict_scenes(tiles, index, scenes, state, SEGMENTATION, ["landslide"], "cpu")
    assert set(predictions) == {"scene3"}
    assert predictions["scene3"].shape == (64, 100) and set(np.unique(predictions["scene3"])) <= {0, 255}


def test_binary_predictions_are_stored_0_255_and_multiclass_as_indices():
    index_mask = np.array([[0, 1, 2]])
    assert encode_prediction(index_mask, 1).tolist() == [[0, 255, 255]]
    assert encode_prediction(index_mask, 2).tolist() == [[0, 1, 2]]


def _capture_training(monkeypatch):
    """Replace the trainer by a stub that records the masks it would learn from."""
    seen = {}

    def fake_train(images, masks, n_outputs, params, device, body=None):
        seen["masks"], seen["params"], seen["body"] = masks.copy(), params, body
        return build_resunet(n_outputs, params), [{"epoch": 1, "loss": 0.5, "lr": 1e-3, "seconds": 0.1}]

    monkeypatch.setattr(nodes, "train_resunet", fake_train)
    return seen


def test_padding_is_never_supervision_whatever_the_masks_say(monkeypatch):
    seen = _capture_training(monkeypatch)
    tiles, masks, _, index = toy_tiles(4)
    index["height"], index["width"] = 40, 50  # border tiles: past row 40 / col 50 is reflected padding
    claims_padding = {k: np.ones_like(v) for k, v in masks.items()}
    train_segmentation_model(tiles, claims_padding, index, SEGMENTATION, ["landslide"], 0, "cpu")
    assert (seen["masks"][:, 40:] == 255).all() and (seen["masks"][:, :, 50:] == 255).all()
    assert (seen["masks"][:, :40, :50] == 1).all()
    assert seen["body"] is None  # no pre-trained body given (supervised_reference): seeded random weights


def test_training_curves_carry_the_given_prefix_and_the_masks_dataset_is_named(monkeypatch, caplog):
    _capture_training(monkeypatch)
    tiles, masks, _, index = toy_tiles(2)
    with caplog.at_level("INFO"):
        _, table, curves = train_segmentation_model(
            tiles, masks, index, SEGMENTATION, ["landslide"], 3, "cpu", masks_dataset="tile_masks", history_prefix="ref"
        )
    assert set(curves) == {"ref.loss", "ref.lr", "ref.seconds"} and len(table) == 1
    assert "`tile_masks`" in caplog.text and "pseudo" not in caplog.text


def test_ignore_outside_scene_keeps_full_tiles():
    masks = np.ones((2, 4, 4), np.uint8)
    rows = pd.DataFrame({"height": [4, 2], "width": [4, 3]})
    out = ignore_outside_scene(masks, rows)
    assert (out[0] == 1).all() and (out[1, 2:] == 255).all() and (out[1, :2, 3] == 255).all()
    assert (out[1, :2, :3] == 1).all() and (masks == 1).all()


def test_without_alps_the_pretraining_nodes_return_empty_results_and_read_no_model():
    tiles, _, _, index = toy_tiles()
    training = {**SEGMENTATION, "pretrain": "none"}
    maps, table = nodes.cluster_regions(tiles, index, {"not": "a state_dict"}, training, {}, {}, ["landslide"], 0, "cpu")
    assert maps == {} and table.empty and list(table.columns) == ["cluster_id", "regions", "pixels", "tiles"]
    assert nodes.pretrain_segmentation_model(tiles, {}, index, training, 0, "cpu") == ({}, {})


def test_alps_nodes_cluster_the_train_tiles_and_pretrain_a_body():
    from wsss_project.learning.localizers import LOCALIZERS

    tiles, _, _, index = toy_tiles()
    localization = {"method": "mil", "image_mean": [0.5] * 3, "image_std": [0.25] * 3,
                    "mil": {"width": 4, "n_layers": 2, "input_scale": 0.5}}
    cam_model = LOCALIZERS["mil"].build(1, localization).state_dict()
    conf = Path(__file__).resolve().parents[3] / "conf" / "base" / "parameters_sam_labeling.yml"
    regions = yaml.safe_load(conf.read_text())["sam_labeling"]["regions"]  # the project's superpixels
    training = {**SEGMENTATION, "pretrain": "alps",
                "alps": {"n_clusters": 3, "kmeans_batch_tiles": 2, "kmeans_passes": 1, "epochs": 1}}
    maps, table = nodes.cluster_regions(tiles, index, cam_model, training, {"regions": regions}, localization,
                                        ["landslide"], 0, "cpu")
    assert sorted(maps) == sorted(index.tile_id) and table["regions"].sum() > 0
    body, curves = nodes.pretrain_segmentation_model(tiles, maps, index, training, 0, "cpu")
    assert body and "segmentation_pretraining.loss" in curves
