"""supervised_reference pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from wsss_project.pipelines.segmentation_training.nodes import predict_scenes

from .nodes import train_supervised_reference


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                train_supervised_reference,
                ["tiles", "tile_masks", "tile_index", "params:segmentation_training",
                 "params:classes", "params:seed", "params:device"],
                ["supervised_model", "supervised_training_history", "supervised_training_curves"],
                name="train_supervised_reference",
            ),
            node(
                predict_scenes,
                ["tiles", "tile_index", "scenes", "supervised_model", "params:segmentation_training",
                 "params:classes", "params:device"],
                "supervised_predictions",
                name="predict_supervised_scenes",
            ),
        ]
    )
