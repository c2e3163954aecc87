"""End-to-end: a tiny default run, then `kedro run --pipeline pseudo_label_comparison` on its tiles."""

from __future__ import annotations

import json
import logging

import mlflow
import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from project_files import latest_version
from test_run import TINY_PARAMS

from wsss_project import settings


def test_the_comparison_writes_one_row_per_labeller_and_skips_sam_without_a_checkpoint(project_copy, caplog):
    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy, runtime_params=TINY_PARAMS) as session:
        session.run()
    with caplog.at_level(logging.INFO), KedroSession.create(project_path=project_copy, runtime_params=TINY_PARAMS) as session:
        session.run(pipeline_name="pseudo_label_comparison")

    reporting = project_copy / "data" / "08_reporting"
    table = pd.read_csv(latest_version(reporting / "pseudo_label_comparison.csv"))  # versioned
    assert (reporting / "pseudo_label_comparison.png").stat().st_size > 0
    assert list(table["variant"]) == list(settings.COMPARISON_VARIANTS)  # one row each, declared order
    sam = {"sam", "sam_ios", "sam_auto_regions"}
    status = dict(zip(table["variant"], table["status"], strict=True))
    assert status == {name: "skipped" if name in sam else "ran" for name in settings.COMPARISON_VARIANTS}
    skipped = table[table["status"] == "skipped"]
    assert skipped["note"].str.contains("sam_labeling.sam.checkpoint", regex=False).all()
    assert skipped["iou"].isna().all()
    assert "pseudo_label_comparison.sam skipped: needs SAM: set parameter `sam_labeling.sam.checkpoint`" in caplog.text

    # Scored as the run's own stages are: CAM > T at the run's T is the cam_threshold stage, and GrabCut
    # from the same prompts (the run's default labeller) is its pseudo_labels stage.
    metrics = json.loads(latest_version(reporting / "metrics.json").read_text())
    rows = table.set_index("variant")
    for variant, stage in (("cam_threshold", "cam_threshold"), ("grabcut", "pseudo_labels")):
        for key in ("oa", "precision", "recall", "f1", "iou"):
            assert rows.loc[variant, key] == pytest.approx(metrics[stage][key], abs=1e-12), (variant, key)
    ran = rows[rows["status"] == "ran"]
    train_tiles = pd.read_parquet(latest_version(project_copy / "data" / "02_intermediate" / "tile_index.parquet"))
    assert (ran["n_tiles"] == int((train_tiles["split"] == "train").sum())).all()
    assert (ran["seconds_per_tile"] > 0).all() and ran["ignored_fraction"].between(0, 1).all()
    # IOS only turns masks into ignore: never more landslide pixels than GrabCut's, some pixels ignored.
    assert rows.loc["grabcut_ios", "recall"] <= rows.loc["grabcut", "recall"]
    assert rows.loc["grabcut_ios", "ignored_fraction"] >= rows.loc["grabcut", "ignored_fraction"]

    mlflow.set_tracking_uri(f"sqlite:///{project_copy / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["wsss_project"], filter_string="tags.pipeline = 'pseudo_label_comparison'").iloc[0]
    for variant in ran.index:
        assert run[f"metrics.pseudo_label_comparison.{variant}.iou"] == pytest.approx(rows.loc[variant, "iou"])
        assert run[f"metrics.pseudo_label_comparison.{variant}.seconds_per_tile"] > 0
    assert not [key for key in run.index if key.startswith("metrics.pseudo_label_comparison.sam")]
    assert run["params.pseudo_label_comparison.sam.skipped"].startswith("needs SAM")
