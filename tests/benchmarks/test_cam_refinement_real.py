"""Seed 003's USR and VPE on the localizer's own features, on ../shared/data/landslide_real.

    pytest tests/benchmarks/test_cam_refinement_real.py -m benchmark -s

For each localizer (WSSS_BENCH_LOCALIZERS: a JSON list of `localization` overrides; default the
shipped MIL and the APSAM CAM classifier) and seed (WSSS_BENCH_SEEDS, default 0), the localizer is
trained once and its heatmaps written four ways — plain, USR, VPE, USR + VPE (conf/base settings
of `localization.usr` / `localization.vpe`) — through the project's own nodes. Per variant:
- T as `threshold: auto` picks it on the train tiles from that variant's heatmaps (no masks);
- CAM > T IoU on the train scenes (each scene pixel once, tile labels gate the CAM) and on the
  test scenes (heatmap > T, each pixel once), pooled and per source, and the test AP;
- seconds per tile of the refinement: (generate_cams time - the plain one's) / tiles.
Outputs stay in $WSSS_BENCH_DIR (default /tmp/wsss_bench/cam_refinement_real).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
from kedro.framework.session import KedroSession
from kedro_runs import make_workdir, run_stages
from test_localization_real import _direct_test_scores, _merge

from wsss_project.pipelines.evaluation.nodes import evaluate_cam_threshold
from wsss_project.pipelines.localization.nodes import generate_cams, train_cam_model
from wsss_project.pipelines.prompt_generation.nodes import resolve_prompt_generation
from wsss_project.tile_data import load_partition

DEFAULT_LOCALIZERS = [{"method": "mil"}, {"method": "cam_classifier"}]
VARIANTS = {
    "plain": {},
    "usr": {"usr": {"enabled": True}},
    "vpe": {"vpe": {"enabled": True}},
    "usr+vpe": {"usr": {"enabled": True}, "vpe": {"enabled": True}},
}


def test_usr_and_vpe_on_real_landslides(real_data):
    workdir = make_workdir(Path(os.environ.get("WSSS_BENCH_DIR", "/tmp/wsss_bench/cam_refinement_real")))
    params = {"data": {"source": "folder", "folder": {"images_dir": str(real_data / "images"),
                                                      "masks_dir": str(real_data / "masks")}}}
    run_stages(workdir, ["data_preparation"], params)
    with KedroSession.create(project_path=workdir, runtime_params=params) as session:
        catalog = session.load_context().catalog
        tiles, masks, index = catalog.load("tiles"), catalog.load("tile_masks"), catalog.load("tile_index")
        scenes, classes = catalog.load("scenes"), catalog.load("params:classes")
        localization, prompt_generation = catalog.load("params:localization"), catalog.load("params:prompt_generation")
    tiles = {k: load_partition(tiles, k, "tiles") for k in tiles}
    masks = {k: load_partition(masks, k, "tile_masks") for k in masks}
    localizers = json.loads(os.environ.get("WSSS_BENCH_LOCALIZERS", json.dumps(DEFAULT_LOCALIZERS)))
    seeds = [int(s) for s in os.environ.get("WSSS_BENCH_SEEDS", "0").split(",")]
    name = classes[0]

    rows = []
    for config in localizers:
        trained = _merge(localization, config)
        for seed in seeds:
            state, _, _ = train_cam_model(tiles, index, trained, classes, seed, "auto")
            plain_seconds = None
            for variant, switches in VARIANTS.items():
                settings = _merge(trained, switches)
                started = time.perf_counter()
                cams = generate_cams(tiles, index, state, settings, classes, "auto")
                seconds = time.perf_counter() - started
                plain_seconds = seconds if plain_seconds is None else plain_seconds
                resolved, _ = resolve_prompt_generation(cams, index, prompt_generation, classes)
                threshold = resolved["threshold"]
                train = evaluate_cam_threshold(cams, masks, index, resolved, classes)
                row = {"localizer": json.dumps(config), "variant": variant, "seed": seed, "T": threshold,
                       "refine_s_per_tile": (seconds - plain_seconds) / len(index),
                       "train_cam_iou.pooled": train["iou"],
                       **{f"train_cam_iou.{s}": v["iou"] for s, v in train["per_source"].items()},
                       **_direct_test_scores(cams, masks, index, scenes, name, threshold)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    table = pd.DataFrame(rows)
    (workdir / "cam_refinement.csv").write_text(table.to_csv(index=False))
    print()
    print(table.drop(columns=["seed"]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    assert len(table) == len(localizers) * len(seeds) * len(VARIANTS)
