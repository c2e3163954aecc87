"""Localization methods on ../shared/data/landslide_real, several seeds each, floors beside them.

    pytest tests/benchmarks/test_localization_real.py -m benchmark -s

For each configuration (WSSS_BENCH_LOCALIZERS: a JSON list of `localization` overrides, or the
name of a preset in PRESETS; default the shipped MIL, MIL at 16 channels, and the APSAM CAM
classifier) and each seed (WSSS_BENCH_SEEDS, default 0,1,2), through the project's own nodes:
- direct test-scene IoU of heatmap > T and average precision of the heatmap (pixels sampled
  with a fixed seed), pooled and per source, where T is the one `threshold: auto` picks on the
  train tiles (no masks);
- CAM > T IoU on the train scenes (each scene pixel once, tile labels gate the CAM);
- tile-level test accuracy of the localizer;
then the mean and spread over seeds, and the colour-rule floors of the same test scenes.
Outputs stay in $WSSS_BENCH_DIR (default /tmp/wsss_bench/localization_real).

PRC (seed 004) with and without its parts, both localizers (IR loss weight 0.5, PRC module at
the conf/base settings), eight configurations:

    WSSS_BENCH_LOCALIZERS=prc pytest tests/benchmarks/test_localization_real.py -m benchmark -s
    WSSS_BENCH_LOCALIZERS=prc_mil WSSS_BENCH_SEEDS=0 pytest ...   # the MIL half, one seed
"""

from __future__ import annotations

import json
import os
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from floors import colour_floors
from kedro.framework.session import KedroSession
from kedro_runs import make_workdir, run_stages
from sklearn.metrics import average_precision_score

from wsss_project.contracts import cam_key
from wsss_project.evaluation.metrics import ConfusionAccumulator
from wsss_project.pipelines.evaluation.nodes import evaluate_cam_threshold, scene_ground_truth
from wsss_project.pipelines.localization.nodes import (
    generate_cams,
    score_classifier,
    train_cam_model,
)
from wsss_project.pipelines.prompt_generation.nodes import resolve_prompt_generation
from wsss_project.tile_data import load_partition, stitch_scene, tiles_of_split

DEFAULT_CONFIGS = [{"method": "mil"}, {"method": "mil", "mil": {"width": 16}}, {"method": "cam_classifier"}]
# PRC's parts off / one at a time / both, for one localizer (learning/prc.py).
PRC_IR_WEIGHT = 0.5
PRC_VARIANTS = [
    {},
    {"ir_loss": {"weight": PRC_IR_WEIGHT}},
    {"prc_module": {"enabled": True}},
    {"ir_loss": {"weight": PRC_IR_WEIGHT}, "prc_module": {"enabled": True}},
]
PRESETS = {
    "prc_mil": [{"method": "mil", **variant} for variant in PRC_VARIANTS],
    "prc_cam_classifier": [{"method": "cam_classifier", **variant} for variant in PRC_VARIANTS],
}
PRESETS["prc"] = PRESETS["prc_mil"] + PRESETS["prc_cam_classifier"]
AP_SAMPLE = 0.05  # share of test pixels sampled for average precision (fixed seed)
SCOPES = ("pooled", "bijie", "sichuan")


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _configs(setting: str) -> list[dict]:
    """WSSS_BENCH_LOCALIZERS: a preset's name or a JSON list of `localization` overrides."""
    return PRESETS[setting] if setting in PRESETS else json.loads(setting)


def _direct_test_scores(cams, masks, index, scenes, name, threshold) -> dict[str, float]:
    """Heatmap > T on whole test scenes (each pixel once): IoU and AP, pooled and per source."""
    accumulators = {scope: ConfusionAccumulator(2) for scope in SCOPES}
    samples = {scope: ([], []) for scope in SCOPES}
    rng = np.random.default_rng(0)
    test = tiles_of_split(index, "test")
    for scene in scenes[scenes["split"] == "test"].itertuples(index=False):
        rows = test[test["scene_id"] == scene.scene_id]
        heat = stitch_scene(cams, rows, scene.height, scene.width, "cams", key_of=partial(cam_key, name))
        truth = scene_ground_truth(masks, rows, scene.height, scene.width)
        valid = truth != 255
        pick = valid & (rng.random(truth.shape) < AP_SAMPLE)
        for scope in ("pooled", scene.source):
            accumulators[scope].update((heat > threshold).astype(np.uint8), truth)
            samples[scope][0].append(truth[pick] == 1)
            samples[scope][1].append(heat[pick])
    out = {}
    for scope in SCOPES:
        out[f"test_iou.{scope}"] = accumulators[scope].metrics()["iou"]
        y, s = np.concatenate(samples[scope][0]), np.concatenate(samples[scope][1])
        out[f"test_ap.{scope}"] = float(average_precision_score(y, s)) if y.any() else float("nan")
    return out


def test_localizers_on_real_landslides(real_data):
    workdir = make_workdir(Path(os.environ.get("WSSS_BENCH_DIR", "/tmp/wsss_bench/localization_real")))
    params = {"data": {"source": "folder", "folder": {"images_dir": str(real_data / "images"),
                                                      "masks_dir": str(real_data / "masks")}}}
    run_stages(workdir, ["data_preparation"], params)
    with KedroSession.create(project_path=workdir, runtime_params=params) as session:
        catalog = session.load_context().catalog
        tiles, masks, index = catalog.load("tiles"), catalog.load("tile_masks"), catalog.load("tile_index")
        scenes, classes = catalog.load("scenes"), catalog.load("params:classes")
        localization, prompt_generation = catalog.load("params:localization"), catalog.load("params:prompt_generation")
    tiles = {k: load_partition(tiles, k, "tiles") for k in tiles}  # read once, reused by every run
    masks = {k: load_partition(masks, k, "tile_masks") for k in masks}
    configs = _configs(os.environ.get("WSSS_BENCH_LOCALIZERS", json.dumps(DEFAULT_CONFIGS)))
    seeds = [int(s) for s in os.environ.get("WSSS_BENCH_SEEDS", "0,1,2").split(",")]
    name = classes[0]

    rows = []
    for config in configs:
        settings = _merge(localization, config)
        for seed in seeds:
            started = time.perf_counter()
            state, _, _ = train_cam_model(tiles, index, settings, classes, seed, "auto")
            seconds = time.perf_counter() - started
            cams = generate_cams(tiles, index, state, settings, classes, "auto")
            resolved, _ = resolve_prompt_generation(cams, index, prompt_generation, classes)
            threshold = resolved["threshold"]
            train = evaluate_cam_threshold(cams, masks, index, resolved, classes)
            scores = score_classifier(tiles, index, state, settings, classes, "auto")
            row = {"config": json.dumps(config), "seed": seed, "T": threshold, "train_seconds": seconds,
                   "test_tile_accuracy": scores[f"localization.test.{name}.accuracy"]["value"],
                   "train_cam_iou.pooled": train["iou"],
                   **{f"train_cam_iou.{s}": v["iou"] for s, v in train["per_source"].items()},
                   **_direct_test_scores(cams, masks, index, scenes, name, threshold)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = pd.DataFrame(rows)
    (workdir / "localization.csv").write_text(table.to_csv(index=False))
    floors = colour_floors(real_data, scenes, "test")

    metrics = [c for c in table.columns if c not in ("config", "seed")]
    summary = table.groupby("config", sort=False)[metrics].agg(["mean", "std"])
    print("\nmean ± std over seeds " + ",".join(map(str, seeds)))
    for config, values in summary.iterrows():
        print(config)
        for metric in metrics:
            print(f"    {metric:<26}{values[(metric, 'mean')]:>9.4f} ± {values[(metric, 'std')]:.4f}")
    print("floors on the same test scenes (IoU):")
    for rule, values in floors.items():
        print(f"    {rule:<26}" + "  ".join(f"{s} {values[s]:.4f}" for s in SCOPES))
    assert len(table) == len(configs) * len(seeds)
