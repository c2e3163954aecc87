import numpy as np
import pytest
from toy_tiles import PROMPT_GENERATION, toy_tiles

from wsss_project.pipelines.prompt_generation.nodes import resolve_prompt_generation

AUTO = {**PROMPT_GENERATION, "threshold": "auto",
        "auto_threshold": {"rule": "negative_quantile", "negative_quantile": 0.99, "fixed_threshold": 128}}


def test_auto_threshold_uses_heatmaps_and_labels_never_masks():
    _, masks, cams, index = toy_tiles(6)
    resolved, metric = resolve_prompt_generation(cams, index, AUTO, ["landslide"])
    negatives = np.concatenate([cams[f"landslide/{t}"].ravel() for t in index.loc[index.landslide == 0, "tile_id"]])
    assert (negatives > resolved["threshold"]).mean() <= 0.01
    assert metric["prompt_generation.threshold"]["value"] == resolved["threshold"]
    assert resolved["filters"] == AUTO["filters"]  # everything else passes through


def test_auto_threshold_ignores_the_padding_of_border_tiles():
    _, _, cams, index = toy_tiles(6)
    negative = index.loc[index.landslide == 0, "tile_id"].tolist()
    before = resolve_prompt_generation(cams, index, AUTO, ["landslide"])[0]["threshold"]
    for tile_id in negative:
        cams[f"landslide/{tile_id}"] = cams[f"landslide/{tile_id}"].copy()
        cams[f"landslide/{tile_id}"][:, 40:] = 255  # hot padding
    index.loc[index.tile_id.isin(negative), "width"] = 40
    assert resolve_prompt_generation(cams, index, AUTO, ["landslide"])[0]["threshold"] == before


@pytest.mark.parametrize("bad", [300, -1, "high", True])
def test_bad_threshold_names_the_parameter(bad):
    _, _, cams, index = toy_tiles(2)
    with pytest.raises(ValueError, match="prompt_generation.threshold"):
        resolve_prompt_generation(cams, index, {**AUTO, "threshold": bad}, ["landslide"])


def test_a_number_is_used_as_given():
    _, _, cams, index = toy_tiles(2)
    assert resolve_prompt_generation(cams, index, {**AUTO, "threshold": 90}, ["landslide"])[0]["threshold"] == 90
