"""Pseudo-labellers side by side on the tiles, CAMs and T of one default run on landslide_real, by
the project's own `pseudo_label_comparison` pipeline: CAM > T, GrabCut from the APSAM prompts (the
default), GrabCut + IOS, region voting on SLIC superpixels, plus (added here) region voting on
Felzenszwalb superpixels; the SAM variants run when WSSS_BENCH_PARAMS sets sam_labeling.sam.checkpoint.

    pytest tests/benchmarks/test_default_real.py -m benchmark -s            # first: makes the run
    pytest tests/benchmarks/test_pseudo_label_methods_real.py -m benchmark -s

Reads the run in $WSSS_BENCH_DIR (default /tmp/wsss_bench/default_real), refreshes its conf/base from
this checkout (the run's may predate the comparison) and runs the pipeline there, with the data folder
and WSSS_BENCH_PARAMS as overrides. Prints the table (data/08_reporting/pseudo_label_comparison.csv):
pseudo-label IoU and F1 on the train scenes (each scene pixel once; ignore counts as background
there), pooled and per source, precision, recall, the share of pixels left ignore, and seconds per
tile. Every labeller uses the run's T, which `threshold: auto` chose without masks.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from kedro_runs import PROJECT_ROOT, deep_update, run_stages

from wsss_project import settings

FELZENSZWALB = {"segmenter": "regions", "merge": "segmenter", "min_confidence": None, "confidence": "auto",
                "regions": {"source": "superpixels", "superpixels": {"method": "felzenszwalb"}}}
SOURCES = ("bijie", "sichuan")


def test_pseudo_labellers_on_real_landslides(real_data, monkeypatch):
    workdir = Path(os.environ.get("WSSS_BENCH_DIR", "/tmp/wsss_bench/default_real"))
    if not (workdir / "data" / "03_primary" / "prompt_generation_resolved.json").exists():
        pytest.skip(f"no default run in {workdir}: run tests/benchmarks/test_default_real.py first")
    shutil.rmtree(workdir / "conf" / "base")
    shutil.copytree(PROJECT_ROOT / "conf" / "base", workdir / "conf" / "base")
    monkeypatch.setattr(settings, "COMPARISON_VARIANTS",
                        {**settings.COMPARISON_VARIANTS, "regions_felzenszwalb": FELZENSZWALB})
    params = {"data": {"source": "folder", "folder": {"images_dir": str(real_data / "images"),
                                                      "masks_dir": str(real_data / "masks")}}}
    deep_update(params, json.loads(os.environ.get("WSSS_BENCH_PARAMS", "{}")))
    seconds = run_stages(workdir, ["pseudo_label_comparison"], params)["pseudo_label_comparison"]

    folder = workdir / "data" / "08_reporting" / "pseudo_label_comparison.csv"
    table = pd.read_csv(sorted(folder.iterdir())[-1] / folder.name)
    columns = ["variant", "status", "iou", *(f"{s}.iou" for s in SOURCES), "f1", "precision", "recall",
               "ignored_fraction", "seconds_per_tile", *(f"{s}.seconds_per_tile" for s in SOURCES)]
    with pd.option_context("display.width", 250, "display.max_columns", None, "display.precision", 4):
        print(f"\nPseudo-labellers on the train tiles of {workdir} ({seconds:.0f} s in all):\n{table[columns]}")
    assert list(table["variant"]) == list(settings.COMPARISON_VARIANTS)
    ran = table[table["status"] == "ran"]
    assert {"cam_threshold", "grabcut", "grabcut_ios", "regions", "regions_felzenszwalb"} <= set(ran["variant"])
    assert ran[[f"{s}.iou" for s in SOURCES]].notna().all().all()
