"""pseudo_label_comparison: its namespaces and parameters follow settings.COMPARISON_VARIANTS, a score
counts each scene pixel once, SAM variants are skipped without a checkpoint and run with one."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_sam import build_tiny_sam, register_tiny_sam
from toy_tiles import PROMPT_GENERATION, SAM_LABELING, toy_tiles

from wsss_project import settings, sweep_variants
from wsss_project.errors import UserInputError
from wsss_project.pipelines.prompt_generation.nodes import generate_prompts
from wsss_project.pipelines.pseudo_label_comparison import create_pipeline
from wsss_project.pipelines.pseudo_label_comparison.nodes import (
    compare_cam_threshold,
    compare_segmenter,
    comparison_row,
    gather_comparison,
)

CLASSES = ["landslide"]
SAM_VARIANTS = ("sam", "sam_ios", "sam_auto_regions")


def _namespaces(pipeline) -> set[str]:
    return {n.namespace for n in pipeline.nodes if n.namespace}


def test_the_namespaces_are_the_declared_variants():
    assert _namespaces(create_pipeline()) == {f"pseudo_label_comparison.{v}" for v in settings.COMPARISON_VARIANTS}
    assert set(settings.COMPARISON_VARIANTS) == {"cam_threshold", "grabcut", "grabcut_ios", "regions", *SAM_VARIANTS}


def test_a_changed_setting_changes_the_namespaces_and_their_parameters(monkeypatch):
    monkeypatch.setattr(settings, "COMPARISON_VARIANTS", {
        "cam_threshold": None, "felzenszwalb": {"segmenter": "regions", "regions": {"superpixels": {"method": "felzenszwalb"}}}})
    pipeline = create_pipeline()
    assert _namespaces(pipeline) == {"pseudo_label_comparison.cam_threshold", "pseudo_label_comparison.felzenszwalb"}
    gather = pipeline.only_nodes("gather_pseudo_label_comparison").nodes[0]
    assert gather.inputs == ["pseudo_label_comparison.cam_threshold.row", "pseudo_label_comparison.felzenszwalb.row"]
    made = sweep_variants.comparison_parameters({"sam_labeling": SAM_LABELING})
    assert made["cam_threshold"] == {"variant": "cam_threshold", "sam_labeling": None, "skipped": None}
    regions = made["felzenszwalb"]["sam_labeling"]
    # merged key by key: the override replaced one leaf; the run's other region settings stay
    assert regions["regions"]["superpixels"] == {**SAM_LABELING["regions"]["superpixels"], "method": "felzenszwalb"}
    assert regions["regions"]["area_gate"] == SAM_LABELING["regions"]["area_gate"]
    assert {**regions, "segmenter": "grabcut", "regions": SAM_LABELING["regions"]} == SAM_LABELING


@pytest.mark.parametrize("bad", [{}, {"a.b": None}, {"grabcut": "ios"}, ["grabcut"]])
def test_a_bad_setting_is_named(monkeypatch, bad):
    monkeypatch.setattr(settings, "COMPARISON_VARIANTS", bad)
    with pytest.raises(UserInputError, match=r"COMPARISON_VARIANTS in src/wsss_project/settings.py"):
        sweep_variants.comparison_variants()


def test_sam_variants_are_skipped_without_a_checkpoint_and_kept_with_one():
    without = sweep_variants.comparison_parameters({"sam_labeling": SAM_LABELING})
    for name in SAM_VARIANTS:
        assert without[name]["sam_labeling"] is None
        assert "`sam_labeling.sam.checkpoint`" in without[name]["skipped"]
    assert {name for name, made in without.items() if made["skipped"] is None} == {
        "cam_threshold", "grabcut", "grabcut_ios", "regions"}
    with_checkpoint = {**SAM_LABELING, "segmenter": "auto", "min_confidence": 0.5,
                       "sam": {**SAM_LABELING["sam"], "checkpoint": "sam.pth"}}
    made = sweep_variants.comparison_parameters({"sam_labeling": with_checkpoint})
    assert all(m["skipped"] is None for m in made.values())
    # every labeller pinned: GrabCut stays GrabCut beside a checkpoint, and no run's min_confidence leaks in
    assert (made["grabcut"]["sam_labeling"]["segmenter"], made["sam"]["sam_labeling"]["segmenter"]) == ("grabcut", "sam")
    assert {m["sam_labeling"]["min_confidence"] for m in made.values() if m["sam_labeling"]} == {None}
    assert [m["sam_labeling"]["merge"] for m in made.values() if m["sam_labeling"]] == [
        "segmenter", "ios", "segmenter", "segmenter", "ios", "segmenter"]
    assert made["regions"]["sam_labeling"]["regions"]["source"] == "superpixels"
    assert made["sam_auto_regions"]["sam_labeling"]["regions"]["source"] == "sam_auto"
    # the checkpoint only where SAM reads it (else the schema would warn, every run, that it is unused)
    assert {name for name, m in made.items() if m["sam_labeling"] and m["sam_labeling"]["sam"]["checkpoint"]} == set(SAM_VARIANTS)


def test_a_skipped_variant_labels_nothing_and_says_which_parameter_enables_it(caplog):
    with caplog.at_level(logging.INFO):
        # the tiles are never read: a skipped variant loads no segmenter and labels no tile
        row = compare_segmenter("sam", "set `sam_labeling.sam.checkpoint`", None, {}, {}, pd.DataFrame(),
                                pd.DataFrame(), {}, PROMPT_GENERATION, CLASSES, "cpu")
    assert row == {"variant": "sam", "status": "skipped", "note": "set `sam_labeling.sam.checkpoint`"}
    assert "pseudo_label_comparison.sam skipped: set `sam_labeling.sam.checkpoint`" in caplog.text


def _overlapping_scene() -> tuple[pd.DataFrame, dict, dict]:
    """One 8 x 12 scene cut into two 8 x 8 tiles overlapping on scene columns 4..7. Columns 4-5 are
    owned by the left tile, 6-7 by the right (nearest valid-window centre). Truth: landslide on columns
    4-5. The left tile claims columns 4..7, the right tile nothing and leaves its first four columns
    (scene 4..7) ignore. Counted once, the claims are exact (IoU 1); counted in every tile, IoU would
    be 16 / 48."""
    index = pd.DataFrame([
        {"tile_id": f"s__0_{col}", "scene_id": "s", "source": "toy", "row": 0, "col": col, "height": 8, "width": 8,
         "split": "train", "landslide": 1} for col in (0, 4)])
    truth_scene = np.zeros((8, 12), np.uint8)
    truth_scene[:, 4:6] = 1
    truth = {"s__0_0": truth_scene[:, 0:8].copy(), "s__0_4": truth_scene[:, 4:12].copy()}
    left = np.zeros((8, 8), np.uint8)
    left[:, 4:8] = 1
    right = np.zeros((8, 8), np.uint8)
    right[:, 0:4] = 255  # ignore counts as background
    return index, truth, {"s__0_0": left, "s__0_4": right}


def test_a_score_counts_each_scene_pixel_once():
    index, truth, masks = _overlapping_scene()
    row = comparison_row("hand", masks, {"toy": (2, 1.0)}, 0.0, truth, index, CLASSES)
    assert (row["iou"], row["f1"], row["oa"]) == (1.0, 1.0, 1.0)
    # ignore where the right tile owns it (scene columns 6-7: 16 of 96 pixels; per tile it would be 32 / 128)
    assert row["ignored_fraction"] == pytest.approx(16 / 96)
    assert (row["n_tiles"], row["seconds_per_tile"]) == (2, 0.5)


def test_cam_threshold_claims_what_its_cam_puts_above_t_on_positive_tiles():
    tiles, masks, cams, index = toy_tiles()
    row = compare_cam_threshold("cam_threshold", cams, index, masks, {**PROMPT_GENERATION, "threshold": 0}, CLASSES)
    # T = 0: every pixel with any CAM on the positive tiles; the CAM is the blurred truth, so recall is 1
    assert row["recall"] == 1.0 and 0 < row["precision"] < 1
    high = compare_cam_threshold("cam_threshold", cams, index, masks, PROMPT_GENERATION, CLASSES)
    assert high["precision"] > row["precision"] and high["ignored_fraction"] == 0.0


def test_per_source_columns_appear_with_two_sources():
    tiles, masks, cams, index = toy_tiles()
    index["source"] = ["a", "a", "b", "b"]
    row = compare_cam_threshold("cam_threshold", cams, index, masks, PROMPT_GENERATION, CLASSES)
    assert {"a.iou", "a.f1", "a.seconds_per_tile", "b.iou", "b.f1", "b.seconds_per_tile"} <= set(row)
    table, figure, metrics = gather_comparison(row, {"variant": "sam", "status": "skipped", "note": "why"})
    assert list(table["variant"]) == ["cam_threshold", "sam"] and np.isnan(table.loc[1, "iou"])
    assert metrics["pseudo_label_comparison.cam_threshold.a.iou"]["value"] == row["a.iou"]
    assert not [key for key in metrics if key.startswith("pseudo_label_comparison.sam.")]
    assert len(figure.axes) == 2


def test_sam_variants_run_with_a_tiny_checkpoint(tmp_path, monkeypatch):
    model_type = register_tiny_sam(monkeypatch)
    checkpoint = tmp_path / "tiny.pth"
    torch.save(build_tiny_sam().state_dict(), checkpoint)
    tiles, masks, cams, index = toy_tiles()
    prompts = generate_prompts(cams, index, PROMPT_GENERATION, CLASSES)
    cache = tmp_path / "embeddings"
    run = {**SAM_LABELING, "segmenter": "auto", "embedding_cache_dir": str(cache), "sam": {**SAM_LABELING["sam"], "checkpoint": str(checkpoint),
                                                        "model_type": model_type},
           "regions": {**SAM_LABELING["regions"], "sam_auto": {**SAM_LABELING["regions"]["sam_auto"], "points_per_side": 8}}}
    made = sweep_variants.comparison_parameters({"sam_labeling": run})
    rows = {name: compare_segmenter(name, made[name]["skipped"], made[name]["sam_labeling"], tiles, cams, prompts, index,
                                    masks, PROMPT_GENERATION, CLASSES, "cpu") for name in SAM_VARIANTS}
    for name, row in rows.items():
        assert row["status"] == "ran" and row["n_tiles"] == len(index), name
        assert 0 <= row["iou"] <= 1 and row["seconds_per_tile"] > 0 and row["setup_seconds"] > 0
    # IOS only turns SAM's masks into ignore
    assert rows["sam_ios"]["recall"] <= rows["sam"]["recall"]
    assert rows["sam_ios"]["ignored_fraction"] >= rows["sam"]["ignored_fraction"]
    assert not cache.exists()  # each SAM variant encodes its own tiles: no variant reads another's embeddings
