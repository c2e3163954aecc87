"""`segmentation_training.refine: ios` (PRC's step 7) on the test-scene predictions of one default
run on landslide_real: prediction IoU before and after, side by side, at the shipped
`sam_labeling.ios.min_overlap` and the run's T (both chosen without masks).

    pytest tests/benchmarks/test_default_real.py -m benchmark -s            # first: makes the run
    pytest tests/benchmarks/test_prediction_refinement_real.py -m benchmark -s

Reads the run in $WSSS_BENCH_DIR (default /tmp/wsss_bench/default_real): its unrefined
predictions (the default `refine: none` passes them through), its CAMs of the test tiles and its
resolved T. Test scenes are scored whole (each pixel once) by evaluation's own node.
"""

from __future__ import annotations

from pathlib import Path

from kedro_runs import default_run_folder, load_from_run

from wsss_project.pipelines.evaluation.nodes import evaluate_predictions
from wsss_project.pipelines.segmentation_training.nodes import refine_predictions
from wsss_project.settings import CONFIG_LOADER_CLASS

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCOPES = ("pooled", "bijie", "sichuan")


def _ious(metrics: dict) -> dict[str, float]:
    return {"pooled": metrics["iou"], **{source: values["iou"] for source, values in metrics["per_source"].items()}}


def test_ios_refinement_of_predictions_on_real_landslides(real_data):
    workdir = default_run_folder("data/07_model_output/predictions")
    names = ("predictions", "cams", "tile_index", "scenes", "tile_masks", "prompt_generation_resolved", "params:classes")
    predictions, cams, index, scenes, masks, resolved, classes = load_from_run(workdir, names)
    parameters = CONFIG_LOADER_CLASS(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="local")["parameters"]
    training = {**parameters["segmentation_training"], "refine": "ios"}
    refined, counts = refine_predictions(predictions, cams, index, scenes, resolved, training,
                                         parameters["sam_labeling"], classes)
    before = _ious(evaluate_predictions(predictions, masks, index, scenes, classes))
    after = _ious(evaluate_predictions(refined, masks, index, scenes, classes))
    print(f"\nrefine: ios at min_overlap {parameters['sam_labeling']['ios']['min_overlap']}, "
          f"T = {resolved['threshold']}: " + ", ".join(f"{k.split('.')[-1]} {v['value']:.0f}" for k, v in counts.items()))
    print(f"{'prediction IoU':<22}" + "".join(f"{s:>9}" for s in SCOPES))
    for name, values in (("refine: none", before), ("refine: ios", after)):
        print(f"{name:<22}" + "".join(f"{values.get(s, float('nan')):>9.4f}" for s in SCOPES))
    assert set(before) == set(after)
