"""supervised_reference pipeline: segmentation_training's pipeline, namespaced, on the true masks."""

from kedro.pipeline import Pipeline, pipeline

from wsss_project.pipelines.segmentation_training.pipeline import training_pipeline

NAMESPACE = "supervised_reference"
HISTORY_PREFIX = "supervised_reference_training"


def create_pipeline(**kwargs) -> Pipeline:
    """The same nodes, parameters and seed as segmentation_training (so the same model kind,
    `segmentation_training.model`, for a like-for-like ceiling), fed `tile_masks`; only the datasets
    it writes are renamed, so the two models sit side by side."""
    return pipeline(
        training_pipeline(masks="tile_masks", history_prefix=HISTORY_PREFIX),
        namespace=NAMESPACE,
        inputs={"tiles", "tile_masks", "tile_index", "scenes"},
        outputs={
            "segmentation_model": "supervised_model",
            "segmentation_training_history": "supervised_training_history",
            "segmentation_training_curves": "supervised_training_curves",
            "predictions": "supervised_predictions",
            "prediction_probabilities": "supervised_prediction_probabilities",
        },
        parameters={"params:segmentation_training", "params:classes", "params:seed", "params:device",
                    "params:text_prototype_kb", "params:data", "params:compute"},
    )
