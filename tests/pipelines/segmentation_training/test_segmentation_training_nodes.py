import numpy as np
import pandas as pd
from toy_tiles import toy_tiles

from wsss_project.pipelines.segmentation_training.nodes import (
    encode_prediction,
    predict_scenes,
    train_segmentation_model,
)

SEGMENTATION = {
    "base_width": 4, "depth": 2, "epochs": 1, "batch_size": 2, "optimizer": "adamw", "lr": 1e-3,
    "weight_decay": 1e-4, "dice_weight": 0.5, "augment": True, "crop_size": 32,
    "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "tta_flips": False,
    "inference_batch_size": 2,
}


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
