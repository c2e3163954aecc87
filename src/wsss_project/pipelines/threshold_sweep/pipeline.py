"""threshold_sweep and prompt_ablation: the main pipeline's nodes once per variant namespace, and
a gather node per table.

The variants are declared in settings.SWEEP_VARIANTS (see sweep_variants.py, which names the
namespaces and gives each its parameters):
- `threshold_sweep.t050` ...: prompt_generation -> label_tiles -> the evaluation of CAM > T and of
  the pseudo-labels, with `params:threshold_sweep.t050.prompt_generation` (T = 50);
- `prompt_ablation.box` ...: label_tiles -> the evaluation of the pseudo-labels, with
  `params:prompt_ablation.box.sam_labeling`, on the run's prompts at its resolved T
  (`prompts`, `prompt_generation_resolved`).
Every namespace shares tiles, CAMs, masks and one segmenter, built once by sam_labeling's
`build_segmenter`. Each namespace's nodes carry its name as a tag, and so does that node, so
`--tags threshold_sweep.t090` runs one variant with the segmenter it needs.
"""

from __future__ import annotations

from types import ModuleType

from kedro.pipeline import Pipeline, node, pipeline

from wsss_project import sweep_variants
from wsss_project.pipelines import evaluation, prompt_generation, sam_labeling

from .nodes import (
    ablation_row,
    count_empty_positive_tiles,
    gather_prompt_ablation,
    gather_threshold_sweep,
    sweep_row,
)

SHARED_INPUTS = {"tiles", "cams", "tile_index", "tile_masks", "segmenter"}
# The run's parameters every namespace reads as they are (where the labelling runs, on which device).
SHARED_PARAMETERS = {"params:classes", "params:compute", "params:device"}


def _main_nodes(module: ModuleType, *names: str) -> Pipeline:
    """Nodes of a main pipeline, as they are there."""
    return module.create_pipeline().only_nodes(*names)


def _threshold_namespace(namespace: str) -> Pipeline:
    body = pipeline(
        [
            prompt_generation.create_pipeline(),
            _main_nodes(sam_labeling, "label_tiles"),
            _main_nodes(evaluation, "evaluate_cam_threshold", "evaluate_pseudo_labels"),
            node(count_empty_positive_tiles, ["pseudo_masks", "tile_index", "params:classes"], "n_empty_tiles",
                 name="count_empty_positive_tiles"),
            node(sweep_row, ["pseudo_label_metrics", "cam_threshold_metrics", "prompts", "n_empty_tiles",
                             "prompt_generation_resolved"], "row", name="sweep_row"),
        ]
    )
    # params:prompt_generation becomes params:<namespace>.prompt_generation; the rest is shared.
    return pipeline(body, namespace=namespace, inputs=SHARED_INPUTS,
                    parameters=SHARED_PARAMETERS | {"params:sam_labeling"}, tags=namespace)


def _ablation_namespace(namespace: str) -> Pipeline:
    body = pipeline(
        [
            _main_nodes(sam_labeling, "label_tiles"),
            _main_nodes(evaluation, "evaluate_pseudo_labels"),
            node(ablation_row, ["pseudo_label_metrics", "params:sam_labeling", "prompt_generation_resolved"], "row",
                 name="ablation_row"),
        ]
    )
    # params:sam_labeling becomes params:<namespace>.sam_labeling; prompts and T are the run's.
    return pipeline(body, namespace=namespace, inputs=SHARED_INPUTS | {"prompts", "prompt_generation_resolved"},
                    parameters=SHARED_PARAMETERS, tags=namespace)


def _with_segmenter(variants: Pipeline) -> Pipeline:
    """The variants and the one segmenter they share, tagged with every variant's namespace."""
    namespaces = sorted({n.namespace for n in variants.nodes if n.namespace})
    return variants + pipeline(_main_nodes(sam_labeling, "build_segmenter"), tags=namespaces)


def _threshold_sweep() -> Pipeline:
    namespaces = sweep_variants.threshold_namespaces()
    gather = node(gather_threshold_sweep, [f"{ns}.row" for ns in namespaces],
                  ["threshold_sweep_table", "threshold_sweep_figure", "threshold_sweep_mlflow"],
                  name="gather_threshold_sweep")
    return pipeline([*(_threshold_namespace(ns) for ns in namespaces), gather])


def _prompt_ablation() -> Pipeline:
    namespaces = sweep_variants.ablation_namespaces()
    gather = node(gather_prompt_ablation, [f"{ns}.row" for ns in namespaces],
                  ["prompt_ablation_table", "prompt_ablation_figure", "prompt_ablation_mlflow"],
                  name="gather_prompt_ablation")
    return pipeline([*(_ablation_namespace(ns) for ns in namespaces), gather])


def create_pipeline(**kwargs) -> Pipeline:
    """The threshold sweep and the prompt ablation: both reuse the same segmenter and embeddings."""
    return _with_segmenter(_threshold_sweep() + _prompt_ablation())


def create_prompt_ablation_pipeline(**kwargs) -> Pipeline:
    """The prompt ablation alone."""
    return _with_segmenter(_prompt_ablation())
