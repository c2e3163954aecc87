"""APSAM on ../shared/data/landslide_real, no weights, 2 CPU cores: does prompting a segmenter
from the CAM beat thresholding the CAM?

    pytest tests/benchmarks/test_apsam_real.py -m benchmark -s

Prints F1 and IoU of cam_threshold, pseudo_labels and prediction for bijie, sichuan and pooled,
and seconds per stage. Outputs stay in $WSSS_BENCH_DIR (default /tmp/wsss_bench/apsam_real) for
inspection, e.g. with Kedro-Viz or the MLflow UI. Extra overrides: WSSS_BENCH_PARAMS as JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kedro_runs import latest_json, make_workdir, run_stages

STAGES = ["data_preparation", "localization", "prompt_generation", "sam_labeling",
          "segmentation_training", "evaluation"]


def _deep_update(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        base[key] = _deep_update(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def test_apsam_on_real_landslides(real_data):
    workdir = make_workdir(Path(os.environ.get("WSSS_BENCH_DIR", "/tmp/wsss_bench/apsam_real")))
    params = {
        "data": {"source": "folder", "folder": {"images_dir": str(real_data / "images"),
                                                "masks_dir": str(real_data / "masks")}},
    }
    _deep_update(params, json.loads(os.environ.get("WSSS_BENCH_PARAMS", "{}")))
    seconds = run_stages(workdir, STAGES, params)
    metrics = latest_json(workdir / "data" / "08_reporting" / "metrics.json")

    print(f"\nAPSAM on landslide_real, overrides {json.dumps(params)}")
    print(f"{'stage':<15}{'scope':<10}{'F1':>8}{'IoU':>8}")
    for stage, result in metrics.items():
        scopes = {"pooled": result, **result["per_source"]}
        for scope, values in scopes.items():
            print(f"{stage:<15}{scope:<10}{values['f1']:>8.4f}{values['iou']:>8.4f}")
    gain = metrics["pseudo_labels"]["iou"] - metrics["cam_threshold"]["iou"]
    print(f"pseudo_labels - cam_threshold IoU (pooled): {gain:+.4f}")
    print("seconds per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    (workdir / "benchmark.json").write_text(json.dumps({"metrics": metrics, "seconds": seconds}, indent=2))

    # Sanity, not a target: every stage was measured on both sources.
    for result in metrics.values():
        assert set(result["per_source"]) == {"bijie", "sichuan"}
