"""Report figures: expected axes, and each saves to a non-empty PNG."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from wsss_project.geometry.prompts import adaptive_prompts, prompts_table
from wsss_project.reporting.figures import (
    IGNORE_COLOUR,
    colourise_mask,
    prompt_ablation_bars,
    sample_panels,
    stage_comparison,
    threshold_curve,
)

SIZE = 32
T = 120


def _sample(tile_id, with_prediction=True, seed=0):
    rng = np.random.default_rng(seed)
    cam = np.zeros((SIZE, SIZE), np.uint8)
    cam[4:12, 4:14] = 200
    cam[20, 20] = 220  # a one-pixel blob: box only, NaN point
    gt = np.zeros((SIZE, SIZE), np.uint8)
    gt[5:12, 5:13] = 1
    gt[-2:, :] = 255
    prompts = prompts_table([(tile_id, 1, adaptive_prompts(cam, T))])
    return {
        "tile_id": tile_id,
        "image": rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8),
        "gt": gt,
        "cam": cam,
        "prompts": prompts,
        "pseudo": (cam > T).astype(np.uint8),
        "prediction": gt.copy() if with_prediction else None,
    }


def _assert_saves(figure, tmp_path, name):
    assert isinstance(figure, Figure)
    path = tmp_path / f"{name}.png"
    figure.savefig(path)
    assert path.stat().st_size > 0


def test_sample_panels_has_one_row_per_tile_and_five_columns(tmp_path):
    figure = sample_panels([_sample("s__0_0"), _sample("s__0_32", seed=1)])
    assert len(figure.axes) == 2 * 5
    # boxes of both prompts drawn on the CAM panel of the first row
    assert len(figure.axes[2].patches) == 2
    _assert_saves(figure, tmp_path, "panels")


def test_sample_panels_omits_prediction_column_when_none_has_one(tmp_path):
    figure = sample_panels([_sample("s__0_0", with_prediction=False)])
    assert len(figure.axes) == 4
    assert [ax.get_title() for ax in figure.axes] == [
        "image",
        "ground truth",
        "CAM + prompts",
        "pseudo-mask",
    ]
    _assert_saves(figure, tmp_path, "panels_no_prediction")


def test_sample_panels_keeps_column_when_some_predictions_are_missing():
    figure = sample_panels([_sample("a"), _sample("b", with_prediction=False)])
    assert len(figure.axes) == 2 * 5
    with_prediction, without = figure.axes[4], figure.axes[9]
    assert len(with_prediction.images) == 1 and not with_prediction.texts
    assert not without.images and [text.get_text() for text in without.texts] == ["n/a"]


def test_sample_panels_draws_no_prompts_when_they_are_missing_or_empty(tmp_path):
    sample = _sample("s__0_0")
    sample["prompts"] = prompts_table([])
    other = _sample("s__0_32")
    other["prompts"] = None
    figure = sample_panels([sample, other])
    for cam_panel in (figure.axes[2], figure.axes[7]):  # CAM column of each row
        assert len(cam_panel.images) == 2  # the image and the CAM over it, still drawn
        assert not cam_panel.patches and not cam_panel.collections  # no boxes, no points
    _assert_saves(figure, tmp_path, "no_prompts")


def test_colourise_mask_shows_ignore_grey_and_background_black():
    mask = np.array([[0, 1, 255]], np.uint8)
    rgb = colourise_mask(mask)
    np.testing.assert_allclose(rgb[0, 0], (0, 0, 0))
    np.testing.assert_allclose(rgb[0, 2], IGNORE_COLOUR)
    assert rgb[0, 1].sum() > 0


def test_stage_comparison_draws_every_stage(tmp_path):
    metrics = {
        "prediction": {"oa": 0.98, "precision": 0.7, "recall": 0.74, "f1": 0.73, "iou": 0.58},
        "cam_threshold": {"oa": 0.95, "precision": 0.5, "recall": 0.6, "f1": 0.55, "iou": 0.38},
        "pseudo_labels": {"oa": 0.97, "precision": 0.65, "recall": 0.7, "f1": 0.67, "iou": 0.5},
        "sam_only": {"oa": 0.9, "f1": 0.4},  # other stages are drawn too, gaps for missing keys
        "note": "not a stage",
    }
    figure = stage_comparison(metrics)
    assert len(figure.axes) == 1
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend == ["cam_threshold", "pseudo_labels", "prediction", "sam_only"]
    assert len(figure.axes[0].patches) == 4 * 5
    _assert_saves(figure, tmp_path, "stages")


def test_stage_comparison_labels_scopes_puts_the_reference_beside_prediction_and_titles_the_ratio(tmp_path):
    def stage(scope, iou):
        return {"scope": scope, "oa": 0.9, "precision": 0.7, "recall": 0.7, "f1": 0.7, "iou": iou, "per_source": {}}

    metrics = {
        "supervised_reference": stage("test_scenes", 0.8),
        "prediction": stage("test_scenes", 0.6),
        "pseudo_labels": stage("train_scenes", 0.5),
        "cam_threshold": stage("train_scenes", 0.4),
        "weak_to_full_ratio": {"definition": "prediction.iou / supervised_reference.iou", "value": 0.75,
                               "per_source": {"a": 0.7}},
    }
    figure = stage_comparison(metrics)
    ax = figure.axes[0]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == ["cam_threshold (train scenes)", "pseudo_labels (train scenes)",
                      "prediction (test scenes)", "supervised_reference (test scenes)"]
    assert len(ax.patches) == 4 * 5  # the ratio is no stage
    assert "0.750" in ax.get_title() and "supervised_reference" in ax.get_title()
    undefined = stage_comparison({**metrics, "weak_to_full_ratio": {**metrics["weak_to_full_ratio"], "value": None}})
    assert "n/a" in undefined.axes[0].get_title()
    _assert_saves(figure, tmp_path, "stages_with_reference")


def test_stage_comparison_needs_a_stage():
    with pytest.raises(ValueError):
        stage_comparison({})


def _sweep(with_prompts):
    thresholds = np.arange(50, 180, 10)
    iou = 0.5 - ((thresholds - 120) / 300.0) ** 2
    table = pd.DataFrame({"T": thresholds[::-1], "iou": iou[::-1], "f1": iou[::-1] + 0.15})
    if with_prompts:
        table["n_prompts"] = (400 - thresholds)[::-1]
    return table


@pytest.mark.parametrize(("with_prompts", "n_axes"), [(False, 1), (True, 2)])
def test_threshold_curve_marks_best_threshold(tmp_path, with_prompts, n_axes):
    figure = threshold_curve(_sweep(with_prompts))
    assert len(figure.axes) == n_axes
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert any("oracle_best_T = 120" in label for label in legend)
    assert ("prompts" in legend) == with_prompts
    _assert_saves(figure, tmp_path, f"threshold_{n_axes}")


def test_threshold_curve_rejects_missing_columns():
    with pytest.raises(ValueError, match="f1"):
        threshold_curve(pd.DataFrame({"T": [50], "iou": [0.5]}))


def test_prompt_ablation_bars(tmp_path):
    table = pd.DataFrame(
        {
            "prompt_mode": ["points", "boxes", "points+boxes"],
            "oa": [0.96, 0.977, 0.976],
            "precision": [0.6, 0.7, 0.71],
            "recall": [0.5, 0.65, 0.67],
            "f1": [0.45, 0.5, 0.51],
            "iou": [0.3, 0.34, 0.35],
        }
    )
    figure = prompt_ablation_bars(table)
    assert len(figure.axes) == 1
    assert len(figure.axes[0].patches) == 3 * 5
    _assert_saves(figure, tmp_path, "ablation")
