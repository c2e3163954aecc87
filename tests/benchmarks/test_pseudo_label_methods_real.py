"""Weight-free pseudo-labellers side by side on the tiles, CAMs and T of one default run on
landslide_real: CAM > T, GrabCut from the APSAM prompts (the default), GrabCut + IOS, and region
voting on SLIC and on Felzenszwalb superpixels.

    pytest tests/benchmarks/test_default_real.py -m benchmark -s            # first: makes the run
    pytest tests/benchmarks/test_pseudo_label_methods_real.py -m benchmark -s

Reads the run in $WSSS_BENCH_DIR (default /tmp/wsss_bench/default_real). Prints pseudo-label IoU
on the train scenes (each scene pixel once; ignore counts as background there), precision,
recall, the share of train-tile pixels left ignore, and tiles per second. Every labeller uses the
run's T, which `threshold: auto` chose without masks; no setting here was chosen with masks.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import numpy as np
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro_runs import deep_update

from wsss_project.contracts import IGNORE_INDEX, TRAIN_SPLIT, cam_key
from wsss_project.pipelines.evaluation.nodes import evaluate_pseudo_labels
from wsss_project.pipelines.sam_labeling.nodes import build_segmenter, label_tiles
from wsss_project.settings import CONFIG_LOADER_CLASS
from wsss_project.tile_data import load_partition, positive_class_ids, tile_rows, tiles_of_split

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCOPES = ("pooled", "bijie", "sichuan")
METHODS: dict[str, dict] = {
    "grabcut (default)": {},
    "grabcut + ios": {"merge": "ios"},
    "regions: slic": {"segmenter": "regions", "regions": {"superpixels": {"method": "slic"}}},
    "regions: felzenszwalb": {"segmenter": "regions", "regions": {"superpixels": {"method": "felzenszwalb"}}},
}


def _cam_above_t(tiles, cams, tile_index, classes, threshold) -> dict[str, np.ndarray]:
    """CAM > T as the pseudo-mask of each train tile (the localizer alone): class k where the tile
    is positive for k and its CAM exceeds T, else background."""
    masks = {}
    for tile in tile_rows(tiles_of_split(tile_index, [TRAIN_SPLIT])):
        label = np.zeros(load_partition(tiles, tile["tile_id"], "tiles").shape[:2], np.uint8)
        for k in positive_class_ids(tile, classes):
            label[load_partition(cams, cam_key(classes[k - 1], tile["tile_id"]), "cams") > threshold] = k
        masks[tile["tile_id"]] = label
    return masks


def test_weight_free_pseudo_labellers_on_real_landslides(real_data):
    workdir = Path(os.environ.get("WSSS_BENCH_DIR", "/tmp/wsss_bench/default_real"))
    if not (workdir / "data" / "03_primary" / "prompt_generation_resolved.json").exists():
        pytest.skip(f"no default run in {workdir}: run tests/benchmarks/test_default_real.py first")
    bootstrap_project(workdir)
    with KedroSession.create(project_path=workdir) as session:
        catalog = session.load_context().catalog
        tiles, cams, masks = catalog.load("tiles"), catalog.load("cams"), catalog.load("tile_masks")
        index, prompts = catalog.load("tile_index"), catalog.load("prompts")
        resolved = catalog.load("prompt_generation_resolved")
        classes, device = catalog.load("params:classes"), catalog.load("params:device")
    # this checkout's sam_labeling parameters (the run's conf may predate merge and regions)
    labeling = CONFIG_LOADER_CLASS(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="local")["parameters"]["sam_labeling"]
    n_train = int((index["split"] == TRAIN_SPLIT).sum())
    print(f"\nPseudo-labellers on {n_train} train tiles, T = {resolved['threshold']} (auto, no masks)")
    print(f"{'method':<24}" + "".join(f"{s:>9}" for s in SCOPES) + f"{'precision':>10}{'recall':>8}{'ignored':>9}{'tiles/s':>9}")
    results = {}
    started = time.perf_counter()
    pseudo = _cam_above_t(tiles, cams, index, classes, int(resolved["threshold"]))
    results["cam > T"] = (pseudo, time.perf_counter() - started)
    for name, overrides in METHODS.items():
        params = deep_update(copy.deepcopy(labeling), overrides)
        segmenter = build_segmenter(params, device)
        started = time.perf_counter()
        pseudo = label_tiles(segmenter, tiles, cams, prompts, index, params, resolved, classes)
        results[name] = (pseudo, time.perf_counter() - started)
    for name, (pseudo, seconds) in results.items():
        metrics = evaluate_pseudo_labels(pseudo, masks, index, classes)
        values = {"pooled": metrics["iou"], **{s: v["iou"] for s, v in metrics["per_source"].items()}}
        ignored = np.mean([np.mean(m == IGNORE_INDEX) for m in pseudo.values()])
        print(f"{name:<24}" + "".join(f"{values.get(s, float('nan')):>9.4f}" for s in SCOPES)
              + f"{metrics['precision']:>10.3f}{metrics['recall']:>8.3f}{ignored:>9.3f}{len(pseudo) / seconds:>9.1f}",
              flush=True)
        assert set(metrics["per_source"]) == {"bijie", "sichuan"}
