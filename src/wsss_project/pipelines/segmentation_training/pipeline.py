"""segmentation_training pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import predict_scenes, train_segmentation_model


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                train_segmentation_model,
                ["tiles", "pseudo_masks", "tile_index", "params:segmentation_training",
                 "params:classes", "params:seed", "params:device"],
                ["segmentation_model", "segmentation_training_history", "segmentation_training_curves"],
                name="train_segmentation_model",
            ),
            node(
                predict_scenes,
                ["tiles", "tile_index", "scenes", "segmentation_model", "params:segmentation_training",
                 "params:classes", "params:device"],
                "predictions",
                name="predict_scenes",
            ),
        ]
    )
