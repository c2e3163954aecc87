"""threshold_sweep: one namespace per T (`threshold_sweep.t050` ...), built from the same
prompt_generation -> sam_labeling -> evaluation nodes, and a gather node.

The T values live here, not in parameters, because Kedro builds pipelines before it reads
configuration. The ablation runs at the run's resolved T (`prompt_generation_resolved`: chosen
by `threshold: auto` or given). Every namespace shares tiles, CAMs, masks and the segmenter parameters; SAM image
embeddings are cached on disk, so only the first namespace pays for them.
"""

from __future__ import annotations

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from wsss_project.pipelines.evaluation.nodes import evaluate_cam_threshold
from wsss_project.pipelines.prompt_generation.nodes import generate_prompts
from wsss_project.pipelines.sam_labeling.nodes import label_tiles

from .nodes import (
    ablation_row,
    evaluate_variant,
    gather_prompt_ablation,
    gather_threshold_sweep,
    sweep_row,
    with_prompt_mode,
    with_threshold,
)

SWEEP_THRESHOLDS = tuple(range(50, 171, 10))  # APSAM Fig. 5: T = 50..170, step 10
PROMPT_MODES = ("point_box", "box", "point")  # APSAM Table II
SHARED_INPUTS = {"tiles", "cams", "tile_index", "tile_masks", "prompt_generation_resolved"}
SHARED_PARAMS = {"params:classes", "params:device", "params:sam_labeling"}


def _bound(function, **kwargs):
    """functools.partial that keeps the function's name, for Kedro node names and Viz."""
    return update_wrapper(partial(function, **kwargs), function)


def _labelling_and_evaluation(pg_params: str, sl_params: str) -> list:
    """prompts -> pseudo-masks -> metrics for one variant's prompt_generation and sam_labeling params."""
    return [
        node(generate_prompts, ["cams", "tile_index", pg_params, "params:classes"], "prompts", name="generate_prompts"),
        node(
            label_tiles,
            ["tiles", "cams", "prompts", "tile_index", sl_params, pg_params, "params:classes", "params:device"],
            "pseudo_masks",
            name="label_tiles",
        ),
        node(evaluate_variant, ["pseudo_masks", "tile_masks", "tile_index", "params:classes"],
             ["pseudo_label_metrics", "n_empty_tiles"], name="evaluate_variant"),
    ]


def _sweep_namespace(threshold: int) -> Pipeline:
    body = pipeline(
        [
            node(_bound(with_threshold, threshold=threshold), "prompt_generation_resolved", "pg_params",
                 name="set_threshold"),
            *_labelling_and_evaluation("pg_params", "params:sam_labeling"),
            node(evaluate_cam_threshold, ["cams", "tile_masks", "tile_index", "pg_params", "params:classes"],
                 "cam_threshold_metrics", name="evaluate_cam_threshold"),
            node(_bound(sweep_row, threshold=threshold),
                 ["pseudo_label_metrics", "cam_threshold_metrics", "prompts", "n_empty_tiles"],
                 "row", name="sweep_row"),
        ]
    )
    return pipeline(body, namespace=f"threshold_sweep.t{threshold:03d}", inputs=SHARED_INPUTS, parameters=SHARED_PARAMS)


def create_pipeline(thresholds: tuple[int, ...] = SWEEP_THRESHOLDS, **kwargs) -> Pipeline:
    namespaces = [_sweep_namespace(t) for t in thresholds]
    gather = pipeline(
        [
            node(
                gather_threshold_sweep,
                [f"threshold_sweep.t{t:03d}.row" for t in thresholds],
                ["threshold_sweep_table", "threshold_sweep_figure", "threshold_sweep_mlflow"],
                name="gather_threshold_sweep",
            )
        ]
    )
    return sum(namespaces, Pipeline([])) + gather


def _ablation_namespace(mode: str) -> Pipeline:
    body = pipeline(
        [
            node(_bound(with_prompt_mode, prompt_mode=mode), "params:sam_labeling", "sl_params", name="set_prompt_mode"),
            *_labelling_and_evaluation("prompt_generation_resolved", "sl_params"),
            node(_bound(ablation_row, prompt_mode=mode), ["prompt_generation_resolved", "pseudo_label_metrics"],
                 "row", name="ablation_row"),
        ]
    )
    return pipeline(body, namespace=f"prompt_ablation.{mode}", inputs=SHARED_INPUTS, parameters=SHARED_PARAMS)


def create_prompt_ablation_pipeline(modes: tuple[str, ...] = PROMPT_MODES) -> Pipeline:
    gather = pipeline(
        [
            node(
                gather_prompt_ablation,
                [f"prompt_ablation.{m}.row" for m in modes],
                ["prompt_ablation_table", "prompt_ablation_figure", "prompt_ablation_mlflow"],
                name="gather_prompt_ablation",
            )
        ]
    )
    return sum((_ablation_namespace(m) for m in modes), Pipeline([])) + gather
