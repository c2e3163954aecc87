"""Class names with spaces or dashes (`debris flow`) work in every per-tile node."""

from __future__ import annotations

import numpy as np
from toy_tiles import PROMPT_GENERATION, SAM_LABELING, toy_tiles

from wsss_project.pipelines.evaluation.nodes import evaluate_cam_threshold
from wsss_project.pipelines.prompt_generation.nodes import generate_prompts
from wsss_project.pipelines.sam_labeling.nodes import build_segmenter, label_tiles

NAME = "debris flow-2"


def _renamed():
    tiles, masks, cams, index = toy_tiles()
    index = index.rename(columns={"landslide": NAME})
    cams = {key.replace("landslide/", f"{NAME}/"): cam for key, cam in cams.items()}
    return tiles, masks, cams, index


def test_prompts_labels_and_metrics_with_a_spaced_class_name():
    tiles, masks, cams, index = _renamed()
    prompts = generate_prompts(cams, index, PROMPT_GENERATION, [NAME])
    positive = set(index.loc[index[NAME] == 1, "tile_id"])
    assert set(prompts["tile_id"]) == positive  # itertuples renamed the column: no prompt at all

    pseudo = label_tiles(build_segmenter(SAM_LABELING, "cpu"), tiles, cams, prompts, index, SAM_LABELING,
                         PROMPT_GENERATION, [NAME])
    assert all((pseudo[t] == 1).any() for t in positive)
    assert all(not pseudo[t].any() for t in set(pseudo) - positive)

    result = evaluate_cam_threshold(cams, masks, index, PROMPT_GENERATION, [NAME])
    assert result["iou"] > 0.5 and np.isfinite(result["f1"])
