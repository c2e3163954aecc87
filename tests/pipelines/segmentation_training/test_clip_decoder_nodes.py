"""segmentation_training with `model: clip_decoder` on a tiny random-weight CLIP: the nodes' contracts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_foundation import CLIP_LAYERS, CLIP_WIDTH, write_tiny_clip
from toy_tiles import SEGMENTATION, toy_tiles

from wsss_project.datasets.scene_raster import scene_array
from wsss_project.errors import UserInputError
from wsss_project.pipelines.segmentation_training.nodes import (
    classify_scenes,
    predict_scenes,
    train_segmentation_model,
)

DECODER = {
    "blocks": "all", "image_size": None, "adapter_dim": 8, "decoder_dim": 16, "decoder_depth": 1,
    "decoder_heads": 2, "mlp_ratio": 2.0, "seg_weight": 1.0, "aff_weight": 0.1, "lr": 2e-3, "weight_decay": 1e-3,
    "poly_power": 0.9, "epochs": 1, "batch_size": 2, "feature_batch_size": 2, "feature_cache_dtype": "float32",
}
TRAINING = {**SEGMENTATION, "model": "clip_decoder", "clip_decoder": DECODER}


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("clip"))


def _kb(clip_files, checkpoint=None) -> dict:
    config, weights = clip_files
    return {"clip": {"model_name": str(config), "checkpoint": None if checkpoint is False else str(checkpoint or weights)}}


def _with_test_scene(index: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    index = index.copy()
    index.loc[index.scene_id == "scene3", "split"] = "test"
    scenes = pd.DataFrame({"scene_id": ["scene3"], "source": ["toy"], "height": [64], "width": [64], "split": ["test"]})
    return index, scenes


def test_the_clip_decoder_trains_and_predicts_test_scenes_in_the_resunets_contract(clip_files):
    tiles, masks, _, index = toy_tiles(4)
    index, scenes = _with_test_scene(index)
    state, table, curves = train_segmentation_model(tiles, masks, index, TRAINING, ["landslide"], 0, "cpu",
                                                    _kb(clip_files))
    # Only the adapter and decoder are saved (no CLIP tensor), with the identity of the CLIP they need.
    assert not [k for k in state if k.startswith(("visual", "transformer", "token_embedding", "ln_final"))]
    assert len(state["adapter.blocks.0.mlp.0.weight"]) == DECODER["adapter_dim"]
    assert state["adapter.blocks.0.mlp.0.weight"].shape[1] == CLIP_WIDTH
    backbone = state["_extra_state"]
    assert backbone["blocks"] == list(range(1, CLIP_LAYERS + 1)) and len(backbone["checkpoint_sha256"]) == 64
    assert {"segmentation_training.loss", "segmentation_training.aff_loss"} <= set(curves) and len(table) == 1
    probabilities = predict_scenes(tiles, index, scenes, state, TRAINING, ["landslide"], "cpu", _kb(clip_files))
    predictions = classify_scenes(probabilities, ["landslide"])
    assert set(predictions) == {"scene3"}
    prediction = scene_array(predictions["scene3"])
    assert prediction.shape == (64, 64) and prediction.dtype == np.uint8
    assert set(np.unique(prediction)) <= {0, 255}


def test_the_saved_decoder_refuses_another_clip_or_other_blocks(clip_files, tmp_path):
    tiles, masks, _, index = toy_tiles(4)
    index, scenes = _with_test_scene(index)
    state, _, _ = train_segmentation_model(tiles, masks, index, TRAINING, ["landslide"], 0, "cpu", _kb(clip_files))
    _, other = write_tiny_clip(tmp_path, seed=1)
    with pytest.raises(UserInputError, match="checkpoint_sha256"):
        predict_scenes(tiles, index, scenes, state, TRAINING, ["landslide"], "cpu", _kb(clip_files, other))
    last_block_only = {**TRAINING, "clip_decoder": {**DECODER, "blocks": [CLIP_LAYERS]}}
    with pytest.raises(UserInputError, match="blocks"):
        predict_scenes(tiles, index, scenes, state, last_block_only, ["landslide"], "cpu", _kb(clip_files))


def test_without_a_clip_checkpoint_the_error_names_the_parameter(clip_files):
    tiles, masks, _, index = toy_tiles(2)
    with pytest.raises(UserInputError, match="text_prototype_kb.clip.checkpoint"):
        train_segmentation_model(tiles, masks, index, TRAINING, ["landslide"], 0, "cpu", _kb(clip_files, False))
    with pytest.raises(UserInputError, match="text_prototype_kb.clip.checkpoint"):
        train_segmentation_model(tiles, masks, index, TRAINING, ["landslide"], 0, "cpu", None)


def test_a_clip_decoder_run_is_deterministic_for_a_seed(clip_files):
    tiles, masks, _, index = toy_tiles(4)
    runs = [train_segmentation_model(tiles, masks, index, TRAINING, ["landslide"], 0, "cpu", _kb(clip_files))[0]
            for _ in range(2)]
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0] if k != "_extra_state")



def test_the_real_frozen_clip_gets_no_gradient_and_keeps_its_weights(clip_files):
    from wsss_project.learning.clip_decoder_training import load_frozen_clip, train_clip_decoder

    tiles, masks, _, _ = toy_tiles(4)
    images, labels = np.stack(list(tiles.values())), np.stack(list(masks.values()))
    frozen = load_frozen_clip(_kb(clip_files), DECODER, torch.device("cpu"))
    before = {k: v.clone() for k, v in frozen.bundle.model.state_dict().items()}
    train_clip_decoder(frozen.features_fn(2), images, labels, 2, DECODER, 0, torch.device("cpu"), frozen.backbone)
    assert all(p.grad is None and not p.requires_grad for p in frozen.bundle.model.parameters())
    assert all(torch.equal(before[k], v) for k, v in frozen.bundle.model.state_dict().items())
