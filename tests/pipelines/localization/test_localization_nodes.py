import numpy as np
from toy_tiles import toy_tiles

from wsss_project.pipelines.localization.nodes import generate_cams, train_cam_model

LOCALIZATION = {
    "base_width": 8, "blocks": [1, 1, 1, 1], "output_stride": 16, "pretrained_backbone": None,
    "epochs": 2, "batch_size": 4, "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "lr_step_size": 5,
    "lr_gamma": 0.1, "augment": True, "pos_weight": "balanced", "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225], "tta_flips": False, "inference_batch_size": 3,
}


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


def test_border_tile_cam_is_zero_over_padding_and_peaks_in_the_scene():
    from wsss_project.pipelines.localization.nodes import restrict_to_scene

    heatmap = np.zeros((8, 8), np.uint8)
    heatmap[:, 6:] = 255  # hot padding column
    heatmap[2, 2] = 100
    out = restrict_to_scene(heatmap, 8, 5)
    assert (out[:, 5:] == 0).all() and out[2, 2] == 255 and out.dtype == np.uint8
    np.testing.assert_array_equal(restrict_to_scene(heatmap, 8, 8), heatmap)
