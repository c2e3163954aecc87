"""evaluation pipeline: train-scene stages (CAM > T, pseudo-labels), test-scene stages (prediction,
supervised reference), their weak-to-full ratio, the report figures, and the landslide inventory of the
test scenes' predictions."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import (
    build_landslide_inventory,
    collect_metrics,
    evaluate_cam_threshold,
    evaluate_predictions,
    evaluate_pseudo_labels,
    evaluate_supervised_reference,
    plot_sample_panels,
    plot_stage_comparison,
)


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                evaluate_cam_threshold,
                ["cams", "tile_masks", "tile_index", "prompt_generation_resolved", "params:classes"],
                "cam_threshold_metrics",
                name="evaluate_cam_threshold",
            ),
            node(
                evaluate_pseudo_labels,
                ["pseudo_masks", "tile_masks", "tile_index", "params:classes"],
                "pseudo_label_metrics",
                name="evaluate_pseudo_labels",
            ),
            node(
                evaluate_predictions,
                ["predictions", "tile_masks", "tile_index", "scenes", "params:classes"],
                "prediction_metrics",
                name="evaluate_predictions",
            ),
            node(
                evaluate_supervised_reference,
                ["supervised_predictions", "tile_masks", "tile_index", "scenes", "params:classes"],
                "supervised_reference_metrics",
                name="evaluate_supervised_reference",
            ),
            node(
                collect_metrics,
                ["cam_threshold_metrics", "pseudo_label_metrics", "prediction_metrics", "supervised_reference_metrics"],
                ["metrics", "metrics_mlflow"],
                name="collect_metrics",
            ),
            node(plot_stage_comparison, "metrics", "stage_comparison_figure", name="plot_stage_comparison"),
            node(
                plot_sample_panels,
                ["tiles", "tile_masks", "cams", "prompts", "pseudo_masks", "tile_index",
                 "params:reporting", "params:classes"],
                "sample_panels_figure",
                name="plot_sample_panels",
            ),
            node(
                build_landslide_inventory,
                ["predictions", "prediction_probabilities", "scenes", "params:inventory", "params:classes"],
                ["landslide_inventory", "landslide_inventory_mlflow"],
                name="build_landslide_inventory",
            ),
        ]
    )
