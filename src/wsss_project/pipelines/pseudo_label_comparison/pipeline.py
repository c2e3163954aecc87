"""pseudo_label_comparison: one namespace per labeller declared in settings.COMPARISON_VARIANTS
(sweep_variants.py names them and gives each its parameters), and the node that gathers their rows.

- `pseudo_label_comparison.cam_threshold` (the variant declared None): CAM > T at the run's resolved T;
- every other namespace: the run's `sam_labeling` with the variant's overrides, read as
  `params:pseudo_label_comparison.<variant>.sam_labeling`, labelling the run's prompts at its T.
Each namespace's node labels the train tiles, times and scores them, and returns one row; its name is
its tag, so `--tags pseudo_label_comparison.grabcut` runs that labeller alone (without the table).

Not part of `__default__`: it labels the train tiles once per labeller. It reads a finished run's
tiles, CAMs, prompts, resolved T and tile masks.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from wsss_project import sweep_variants

from .nodes import compare_cam_threshold, compare_segmenter, gather_comparison

PARAMS_PREFIX = "params:"
SHARED_PARAMETERS = {"params:classes", "params:device"}


def _variant_namespace(namespace: str, cam_only: bool) -> Pipeline:
    if cam_only:
        body = node(compare_cam_threshold,
                    ["params:variant", "cams", "tile_index", "tile_masks", "prompt_generation_resolved", "params:classes"],
                    "row", name="label_and_score")
    else:
        body = node(compare_segmenter,
                    ["params:variant", "params:skipped", "params:sam_labeling", "tiles", "cams", "prompts", "tile_index",
                     "tile_masks", "prompt_generation_resolved", "params:classes", "params:device"],
                    "row", name="label_and_score")
    body = pipeline([body])
    # Everything but the variant's own parameters and its row is the run's, shared by every namespace.
    free = body.inputs()
    return pipeline(body, namespace=namespace, inputs={name for name in free if not name.startswith(PARAMS_PREFIX)},
                    parameters=free & SHARED_PARAMETERS, tags=namespace)


def create_pipeline(**kwargs) -> Pipeline:
    """Every declared labeller on the same train tiles, then one table, figure and MLflow metrics."""
    variants = sweep_variants.comparison_variants()
    namespaces = sweep_variants.comparison_namespaces()
    gather = node(gather_comparison, [f"{ns}.row" for ns in namespaces],
                  ["pseudo_label_comparison_table", "pseudo_label_comparison_figure", "pseudo_label_comparison_mlflow"],
                  name="gather_pseudo_label_comparison")
    return pipeline([
        *(_variant_namespace(ns, overrides is None) for ns, overrides in zip(namespaces, variants.values(), strict=True)),
        gather,
    ])
