"""`localization.method: clip` (learning/clip_cams.py) with a tiny random CLIP (and DINOv2)."""

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_foundation import (
    CLIP_EMBED_DIM,
    CLIP_LAYERS,
    DINO_HIDDEN,
    write_tiny_clip,
    write_tiny_dino,
)
from toy_tiles import PRC_OFF, toy_tiles

from wsss_project.errors import UserInputError
from wsss_project.foundation.clip import clip_image_features, load_clip
from wsss_project.learning.clip_cams import CONTEXT_KEY, run_context
from wsss_project.learning.localizers import localizer_for

CLIP = {"image_size": 64, "dino_image_size": 56, "batch_size": 2, "dense_path": "final", "topk_fraction": 0.1}
CLASSES = ["landslide", "road"]


def _prototypes(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"class": ["road", "landslide"],  # not the run's order: matched by name
                         "embedding": list(rng.normal(size=(2, CLIP_EMBED_DIM)).astype(np.float32))})


def _params(tmp_path, prototypes=None, dino: bool = False, usr: bool = False) -> dict:
    config, checkpoint = write_tiny_clip(tmp_path)
    kb = {"clip": {"model_name": str(config), "checkpoint": str(checkpoint), "text_batch_size": 4},
          "dino": {"path": str(write_tiny_dino(tmp_path)) if dino else None}}
    localization = {**PRC_OFF, "method": "clip", "clip": CLIP}
    localization["usr"] = {**localization["usr"], "enabled": usr, "attention_layers": CLIP_LAYERS}
    return {**localization, CONTEXT_KEY: run_context(CLASSES, _prototypes() if prototypes is None else prototypes, kb)}


def _tiles(n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    tiles, _, _, index = toy_tiles(n)
    images = np.stack([tiles[t] for t in index["tile_id"]])
    sizes = np.array([[64, 64]] * n)
    sizes[0] = [64, 40]  # a border tile
    return images, sizes


def test_clip_without_text_prototypes_names_the_pipeline_to_run(tmp_path):
    params = _params(tmp_path, prototypes=pd.DataFrame())
    images, sizes = _tiles()
    with pytest.raises(UserInputError, match="kedro run --pipeline text_prototype_kb"):
        localizer_for(params).fit(images, np.ones((3, 2)), sizes, params, torch.device("cpu"))
    missing = _params(tmp_path, prototypes=_prototypes().iloc[:1])
    with pytest.raises(UserInputError, match=r"no row for class\(es\) \['landslide'\]"):
        localizer_for(missing).fit(images, np.ones((3, 2)), sizes, missing, torch.device("cpu"))


def test_the_saved_model_holds_only_the_class_embeddings_in_the_run_order(tmp_path):
    params = _params(tmp_path)
    localizer = localizer_for(params)
    model, history = localizer.fit(*_tiles()[:1], np.ones((3, 2)), _tiles()[1], params, torch.device("cpu"))
    state = model.state_dict()
    assert list(state) == ["text_embeddings"] and history[0]["trained_parameters"] == 0
    assert np.allclose(state["text_embeddings"].numpy(), np.stack(_prototypes()["embedding"])[[1, 0]])
    reloaded = localizer.build(2, params)
    reloaded.load_state_dict(state)  # an empty head takes the saved width
    assert torch.equal(reloaded.text_embeddings, state["text_embeddings"])


def test_heatmaps_are_eq9_cosines_min_max_normalised_over_the_valid_part(tmp_path):
    params = _params(tmp_path)
    localizer = localizer_for(params)
    images, sizes = _tiles()
    model, _ = localizer.fit(images, np.ones((3, 2)), sizes, params, torch.device("cpu"))
    heat = localizer.heatmaps(model, images, sizes, params, torch.device("cpu"))
    assert heat.dtype == np.uint8 and heat.shape == (3, 2, 64, 64)
    assert (heat[0, :, :, 40:] == 0).all()  # padding
    assert all(heat[i, c][: sizes[i, 0], : sizes[i, 1]].max() == 255 for i in range(3) for c in range(2))
    assert all(heat[i, c][: sizes[i, 0], : sizes[i, 1]].min() == 0 for i in range(3) for c in range(2))
    # by hand: cosine of the patch tokens with T_c, upsampled, min-max over the tile
    bundle = load_clip(params[CONTEXT_KEY]["text_prototype_kb"]["clip"]["model_name"],
                       params[CONTEXT_KEY]["text_prototype_kb"]["clip"]["checkpoint"], "cpu")
    tokens = clip_image_features(bundle, images[1:2], 1, 64).patch_tokens[0]  # (d, 4, 4)
    text = torch.from_numpy(_prototypes()["embedding"].iloc[1])
    cosine = torch.nn.functional.cosine_similarity(tokens, text[:, None, None], dim=0)
    up = torch.nn.functional.interpolate(cosine[None, None], size=(64, 64), mode="bilinear", align_corners=False)[0, 0]
    expected = ((up - up.min()) / (up.max() - up.min()) * 255).round().numpy()
    assert np.abs(heat[1, 0].astype(float) - expected).max() <= 1


def test_tile_probabilities_follow_the_top_cosines(tmp_path):
    params = _params(tmp_path)
    localizer = localizer_for(params)
    images, sizes = _tiles()
    model, _ = localizer.fit(images, np.ones((3, 2)), sizes, params, torch.device("cpu"))
    probs = localizer.tile_probabilities(model, images, sizes, params, torch.device("cpu"))
    assert probs.shape == (3, 2) and ((probs >= 0) & (probs <= 1)).all()
    flipped = {**params, CONTEXT_KEY: run_context(CLASSES, _prototypes().assign(
        embedding=[-e for e in _prototypes()["embedding"]]), params[CONTEXT_KEY]["text_prototype_kb"])}
    negated, _ = localizer.fit(images, np.ones((3, 2)), sizes, flipped, torch.device("cpu"))
    # T_c -> -T_c negates every cosine: the top of one is minus the bottom of the other, so p < 1 - p' unless flat
    assert not np.allclose(probs, localizer.tile_probabilities(negated, images, sizes, flipped, torch.device("cpu")))


def test_refinement_features_concatenate_clip_and_dino_and_give_the_last_attention_maps(tmp_path):
    params = _params(tmp_path, dino=True, usr=True)
    localizer = localizer_for(params)
    images, sizes = _tiles(2)
    model, _ = localizer.fit(images, np.ones((2, 2)), sizes, params, torch.device("cpu"))
    features, attentions = localizer.refinement_features(model, images, params, torch.device("cpu"))
    assert features.shape == (2, CLIP_EMBED_DIM + DINO_HIDDEN, 4, 4)
    assert attentions.shape == (2, CLIP_LAYERS, 16, 16)
    assert torch.allclose(attentions.sum(dim=-1), torch.ones(2, CLIP_LAYERS, 16))
    # each model's part is unit-norm per token (neither dominates the affinity)
    assert torch.allclose(features[:, :CLIP_EMBED_DIM].norm(dim=1), torch.ones(2, 4, 4), atol=1e-5)
    assert torch.allclose(features[:, CLIP_EMBED_DIM:].norm(dim=1), torch.ones(2, 4, 4), atol=1e-5)
    too_many = {**params, "usr": {**params["usr"], "attention_layers": CLIP_LAYERS + 1}}
    with pytest.raises(UserInputError, match="localization.usr.attention_layers"):
        localizer.refinement_features(model, images, too_many, torch.device("cpu"))


@pytest.mark.parametrize("usr", [True, False])
def test_one_clip_forward_gives_the_heatmaps_and_refinement_inputs_of_the_separate_calls(tmp_path, usr):
    """generate_cams and VPE's prototype pass take both from one CLIP forward: they must equal what the
    two separate calls (two forwards) give, attentions recorded or not."""
    params = _params(tmp_path, dino=True, usr=usr)
    localizer = localizer_for(params)
    images, sizes = _tiles(3)
    cpu = torch.device("cpu")
    model, _ = localizer.fit(images, np.ones((3, 2)), sizes, params, cpu)
    heatmaps, features, attentions = localizer.heatmaps_and_refinement_features(model, images, sizes, params, cpu)
    np.testing.assert_array_equal(heatmaps, localizer.heatmaps(model, images, sizes, params, cpu))
    separate_features, separate_attentions = localizer.refinement_features(model, images, params, cpu)
    assert torch.equal(features, separate_features)
    assert (attentions is None) == (not usr)
    if usr:
        assert torch.equal(attentions, separate_attentions)
