"""`sam_labeling.workers`: tiles labelled by several threads give the masks and the masks table of
one thread, in tile order; `auto` resolves per segmenter; SAM refuses more than one."""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import pytest
from toy_tiles import PROMPT_GENERATION, SAM_LABELING, toy_tiles

from wsss_project.pipelines.prompt_generation.nodes import generate_prompts
from wsss_project.pipelines.sam_labeling.nodes import build_segmenter, label_tiles_with_table
from wsss_project.segmenters.factory import labelling_workers
from wsss_project.validation.schema import check_section

CLASSES = ["landslide"]
N_TILES = 8
STALL_SECONDS = 0.02


class FirstTilesLast:
    """A GrabCut segmenter whose earlier tiles finish later, so threads complete out of order."""

    def __init__(self, segmenter, order: dict[int, int]) -> None:
        self.inner, self.order, self.name = segmenter, order, segmenter.name

    def at_threshold(self, threshold):
        return FirstTilesLast(self.inner.at_threshold(threshold), self.order)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def segment_scored(self, state, boxes, points, prior):
        time.sleep(STALL_SECONDS * (N_TILES - self.order[id(state)]))
        return self.inner.segment_scored(state, boxes, points, prior)

    def embed(self, image):
        state = self.inner.embed(image)
        self.order[id(state)] = int(image[0, 0, 0]) % N_TILES
        return state


def _label(workers: int, stalled: bool = False):
    tiles, _, cams, index = toy_tiles(N_TILES)
    # Every tile positive, so every thread runs GrabCut; the first pixel numbers the tile for the stall.
    index["landslide"] = 1
    for position, tile_id in enumerate(index.tile_id):
        tiles[tile_id][0, 0, 0] = position
    prompts = generate_prompts(cams, index, PROMPT_GENERATION, CLASSES)
    params = {**SAM_LABELING, "merge": "ios", "workers": workers}
    segmenter = build_segmenter(params, "cpu")
    if stalled:
        segmenter = FirstTilesLast(segmenter, {})
    return label_tiles_with_table(segmenter, tiles, cams, prompts, index, params, PROMPT_GENERATION, CLASSES)


def test_threads_give_the_masks_and_the_table_of_one_thread_in_tile_order():
    masks_one, table_one = _label(1)
    masks_many, table_many = _label(4, stalled=True)
    assert list(masks_many) == list(masks_one)  # tile order
    for tile_id, mask in masks_one.items():
        np.testing.assert_array_equal(masks_many[tile_id], mask)
    assert len(table_one) >= N_TILES // 2
    pd.testing.assert_frame_equal(table_many, table_one)


def test_auto_uses_every_core_for_weight_free_labellers_and_one_for_sam():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert labelling_workers({**SAM_LABELING, "segmenter": "grabcut", "workers": "auto"}) == cores
    assert labelling_workers({**SAM_LABELING, "segmenter": "regions", "workers": "auto"}) == cores
    with_sam = {**SAM_LABELING, "segmenter": "sam", "workers": "auto",
                "sam": {**SAM_LABELING["sam"], "checkpoint": "sam.pth"}}
    assert labelling_workers(with_sam) == 1
    assert labelling_workers({**SAM_LABELING, "workers": 3}) == 3


@pytest.mark.parametrize("segmenter, regions_source", [("sam", "superpixels"), ("regions", "sam_auto")])
def test_schema_refuses_several_workers_for_sam(segmenter, regions_source):
    params = {**SAM_LABELING, "segmenter": segmenter, "workers": 2,
              "sam": {**SAM_LABELING["sam"], "checkpoint": "sam.pth"},
              "regions": {**SAM_LABELING["regions"], "source": regions_source}}
    with pytest.raises(Exception, match="sam_labeling.workers"):
        check_section(params, "sam_labeling")
    check_section({**params, "workers": 1}, "sam_labeling")


def test_schema_refuses_zero_workers():
    with pytest.raises(Exception, match="workers"):
        check_section({**SAM_LABELING, "workers": 0}, "sam_labeling")
