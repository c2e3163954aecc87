from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from toy_tiles import PRC_OFF, SEGMENTATION, toy_tiles

from wsss_project.contracts import (
    COMPONENTS_KEPT,
    COMPONENTS_REMOVED,
    PIXELS_REMOVED,
    REFINEMENT_PREFIX,
)
from wsss_project.datasets.scene_raster import scene_array
from wsss_project.errors import UserInputError
from wsss_project.imagery.tiling import TileWindow, stitch_mean
from wsss_project.learning.segmentation_training import build_resunet
from wsss_project.pipelines.segmentation_training import nodes
from wsss_project.pipelines.segmentation_training.nodes import (
    classify_scenes,
    encode_prediction,
    ignore_outside_scene,
    predict_scenes,
    refine_predictions,
    train_segmentation_model,
)


def _wide_test_scene() -> tuple:
    """toy tiles with scene3 a 64x100 test scene cut into two overlap-free 64x64 tiles (the second padded)."""
    tiles, masks, _, index = toy_tiles(4)
    tiles["scene3__0_64"] = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    index = pd.concat([index, pd.DataFrame([{**index.iloc[3].to_dict(), "tile_id": "scene3__0_64", "col": 64, "width": 36}])])
    index.loc[index.scene_id == "scene3", "split"] = "test"
    index.loc[index.scene_id == "scene3", "width"] = [64, 36]
    scenes = pd.DataFrame({"scene_id": ["scene3"], "source": ["toy"], "height": [64], "width": [100], "split": ["test"]})
    return tiles, masks, index, scenes


def test_predictions_cover_each_test_scene_at_its_original_size():
    tiles, masks, index, scenes = _wide_test_scene()
    state, history, _ = train_segmentation_model(tiles, masks, index, SEGMENTATION, ["landslide"], 0, "cpu")
    probabilities = predict_scenes(tiles, index, scenes, state, SEGMENTATION, ["landslide"], "cpu")
    predictions = classify_scenes(probabilities, ["landslide"])
    assert set(predictions) == set(probabilities) == {"scene3"}
    prediction = scene_array(predictions["scene3"])
    assert prediction.shape == (64, 100) and set(np.unique(prediction)) <= {0, 255}
    assert probabilities["scene3"].band_names == ("landslide",) and scene_array(probabilities["scene3"]).shape == (64, 100)


def test_windowed_predictions_equal_the_whole_scene_stitched_argmax_and_run_one_tile_batch_at_a_time(monkeypatch):
    tiles, masks, index, scenes = _wide_test_scene()
    state, _, _ = train_segmentation_model(tiles, masks, index, SEGMENTATION, ["landslide"], 0, "cpu")
    model = nodes.tile_probabilities(state, SEGMENTATION, 2, torch.device("cpu"))
    # Yesterday's computation: every test tile's probabilities stitched into the whole scene, then argmax.
    test = index[index.split == "test"].sort_values("tile_id")
    probs = model(np.stack([tiles[t] for t in test.tile_id]))
    windows = [TileWindow(t.row, t.col, t.height, t.width) for t in test.itertuples()]
    stitched = stitch_mean(zip(windows, probs.transpose(0, 2, 3, 1), strict=True), 64, 100)
    expected = encode_prediction(stitched.argmax(axis=2), 1)

    batches = []
    monkeypatch.setattr(nodes, "tile_probabilities", lambda *a, **k: lambda images: batches.append(len(images)) or model(images))
    probabilities = predict_scenes(tiles, index, scenes, state, {**SEGMENTATION, "inference_batch_size": 1},
                                   ["landslide"], "cpu")
    assert batches == [], "the model runs while the scene is written, not when the node returns"
    prediction = scene_array(classify_scenes(probabilities, ["landslide"])["scene3"])
    assert batches == [1, 1], "one batch of inference_batch_size tiles at a time"
    np.testing.assert_array_equal(prediction, expected)


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
    localization = {**PRC_OFF, "method": "mil", "image_mean": [0.5] * 3, "image_std": [0.25] * 3,
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


def test_alps_pools_the_frozen_clip_features_named_by_text_prototype_kb_when_the_localizer_is_clip(tmp_path):
    """With `localization.method: clip` the saved cam_model holds only the class embeddings: the node must
    hand ALPS the text_prototype_kb parameters that name the CLIP, else clustering fails asking for them."""
    from tiny_foundation import CLIP_EMBED_DIM, write_tiny_clip

    from wsss_project.learning.localizers import LOCALIZERS

    tiles, _, _, index = toy_tiles()
    clip = {"image_size": 64, "dino_image_size": 56, "batch_size": 2, "dense_path": "final", "topk_fraction": 0.1}
    localization = {**PRC_OFF, "method": "clip", "clip": clip}
    cam_model = {"text_embeddings": torch.randn(1, CLIP_EMBED_DIM)}
    LOCALIZERS["clip"].build(1, localization).load_state_dict(cam_model)  # the shape a clip run saves
    config, checkpoint = write_tiny_clip(tmp_path)
    kb = {"clip": {"model_name": str(config), "checkpoint": str(checkpoint), "text_batch_size": 4}, "dino": {"path": None}}
    conf = Path(__file__).resolve().parents[3] / "conf" / "base" / "parameters_sam_labeling.yml"
    regions = yaml.safe_load(conf.read_text())["sam_labeling"]["regions"]
    training = {**SEGMENTATION, "pretrain": "alps",
                "alps": {"n_clusters": 3, "kmeans_batch_tiles": 2, "kmeans_passes": 1, "epochs": 1}}
    args = (tiles, index, cam_model, training, {"regions": regions}, localization, ["landslide"], 0, "cpu")
    with pytest.raises(UserInputError, match="text_prototype_kb"):
        nodes.cluster_regions(*args)
    maps, table = nodes.cluster_regions(*args, kb)
    assert sorted(maps) == sorted(index.tile_id) and table["regions"].sum() > 0


# --- refine_predictions (segmentation_training.refine) ------------------------------------------------

REFINE_T = 100


def _refinement_case() -> tuple:
    """A 20x40 test scene cut into two 20x20 test tiles. One 20-px predicted component crosses the tile
    border (rows 2..3, columns 15..24): the CAM is above T on 10 of its pixels in the right tile and 4 in
    the left one (IOS 0.7). A second 20-px component (rows 12..13, columns 0..9) lies in the left tile
    where the CAM is 0 (IOS 0). The test tiles' image-level labels say "no landslide": the refinement
    must not read them."""
    rows = [{"tile_id": f"s__0_{col}", "scene_id": "s", "source": "toy", "row": 0, "col": col, "height": 20,
             "width": 20, "split": "test", "landslide": 0} for col in (0, 20)]
    index = pd.DataFrame(rows)
    scenes = pd.DataFrame({"scene_id": ["s"], "source": ["toy"], "height": [20], "width": [40], "split": ["test"]})
    prediction = np.zeros((20, 40), np.uint8)
    prediction[2:4, 15:25] = 255
    prediction[12:14, 0:10] = 255
    right = np.zeros((20, 20), np.uint8)
    right[2:4, 0:5] = REFINE_T + 1  # scene columns 20..24: 10 of the component's 20 px ...
    right[2:4, 5:6] = REFINE_T + 1  # ... and two more, out of the component: IOS stays 10/20
    left = np.zeros((20, 20), np.uint8)
    left[2:4, 18:20] = REFINE_T + 1  # scene columns 18..19: 4 px, so IOS = 14/20 = 0.7
    cams = {"landslide/s__0_0": left, "landslide/s__0_20": right}
    return {"s": prediction}, cams, index, scenes


def _refine(predictions, cams, index, scenes, refine="ios", min_overlap=0.5):
    return refine_predictions(
        predictions, cams, index, scenes, {"threshold": REFINE_T}, {**SEGMENTATION, "refine": refine},
        {"ios": {"min_overlap": min_overlap}}, ["landslide"],
    )


def test_refine_none_passes_the_predictions_through_unchanged_and_logs_nothing():
    predictions, cams, index, scenes = _refinement_case()
    refined, mlflow_metrics = _refine(predictions, cams, index, scenes, refine="none")
    assert refined is predictions and mlflow_metrics == {}


def test_refine_ios_judges_components_of_the_stitched_scene_against_the_stitched_cam():
    predictions, cams, index, scenes = _refinement_case()
    refined, mlflow_metrics = _refine(predictions, cams, index, scenes, min_overlap=0.65)
    out = refined["s"].read()
    # The component crossing the tile border is judged whole, with CAM from both tiles (IOS 0.7).
    assert (out[2:4, 15:25] == 255).all()
    # The one outside the CAM region becomes background (0), not ignore (255, which would read as landslide).
    assert (out[12:14, 0:10] == 0).all()
    assert int((out == 255).sum()) == 20 and set(np.unique(out)) <= {0, 255}
    assert mlflow_metrics == {
        f"{REFINEMENT_PREFIX}.{COMPONENTS_KEPT}": {"value": 1.0, "step": 0},
        f"{REFINEMENT_PREFIX}.{COMPONENTS_REMOVED}": {"value": 1.0, "step": 0},
        f"{REFINEMENT_PREFIX}.{PIXELS_REMOVED}": {"value": 20.0, "step": 0},
    }
    assert (predictions["s"][12:14, 0:10] == 255).all(), "the unrefined predictions are not modified"


def test_refine_ios_removes_the_crossing_component_when_one_tiles_cam_is_not_enough():
    # Without the left tile's 4 px the crossing component has IOS 0.5: the right tile alone decides
    # nothing at min_overlap 0.65, so a refinement that judged tiles, not the scene, would differ.
    predictions, cams, index, scenes = _refinement_case()
    cams["landslide/s__0_0"] = np.zeros((20, 20), np.uint8)
    refined, _ = _refine(predictions, cams, index, scenes, min_overlap=0.65)
    assert not refined["s"].read().any()
    refined, _ = _refine(predictions, cams, index, scenes, min_overlap=0.5)
    assert (refined["s"].read()[2:4, 15:25] == 255).all()


def test_refine_reads_its_two_settings_by_the_schemas_rules():
    predictions, cams, index, scenes = _refinement_case()
    with pytest.raises(UserInputError, match="segmentation_training.refine"):
        _refine(predictions, cams, index, scenes, refine="sam")
    with pytest.raises(UserInputError, match="sam_labeling.ios.min_overlap"):
        _refine(predictions, cams, index, scenes, min_overlap=1.5)
    params = {key: value for key, value in SEGMENTATION.items() if key != "refine"}
    with pytest.raises(KeyError, match="segmentation_training.refine"):
        refine_predictions(predictions, cams, index, scenes, {"threshold": REFINE_T}, params,
                           {"ios": {"min_overlap": 0.5}}, ["landslide"])


def test_refine_needs_the_cams_of_every_test_tile():
    predictions, cams, index, scenes = _refinement_case()
    del cams["landslide/s__0_20"]
    with pytest.raises(KeyError, match="`cams` has no partition 'landslide/s__0_20'"):
        _refine(predictions, cams, index, scenes)


def test_the_cluster_stream_runs_every_scene_in_one_stream_and_hands_each_scene_its_own_sets():
    """On a cluster the test scenes share one stream of tasks (the next scenes run while one is written);
    each scene must still get exactly its own sets' results, and a scene asked for out of the stream's
    order is an error rather than another scene's probabilities."""
    from wsss_project.pipelines.segmentation_training.nodes import _ClusterSceneStream

    tiles = {f"t{k}": np.full((2, 2, 3), k, np.uint8) for k in range(5)}
    sets_by_scene = {"a": [[{"tile_id": "t0"}, {"tile_id": "t1"}], [{"tile_id": "t2"}]],
                     "b": [[{"tile_id": "t3"}, {"tile_id": "t4"}]]}
    streams = []

    def predict_sets(stacks):
        streams.append(1)
        return (stack[:, 0, 0, 0].copy() for stack in stacks)  # each tile's value: which tile it was

    stream = _ClusterSceneStream(predict_sets, tiles, sets_by_scene)
    assert [r.tolist() for r in stream.results_of("a")] == [[0, 1], [2]]
    assert [r.tolist() for r in stream.results_of("b")] == [[3, 4]]
    assert streams == [1]  # one stream for every scene
    with pytest.raises(RuntimeError, match="scene b was asked for when a was next"):
        list(_ClusterSceneStream(predict_sets, tiles, sets_by_scene).results_of("b"))
