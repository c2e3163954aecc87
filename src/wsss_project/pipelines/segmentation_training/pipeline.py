"""segmentation_training pipeline."""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import (
    HISTORY_PREFIX,
    MASKS_DATASET,
    predict_scenes,
    refine_predictions,
    train_segmentation_model,
)

UNREFINED = "unrefined_predictions"  # the ResUNet's scene predictions before segmentation_training.refine


def training_pipeline(masks: str = MASKS_DATASET, history_prefix: str = HISTORY_PREFIX) -> Pipeline:
    """Train ResUNet on the train tiles' `masks` and predict the test scenes.

    `masks` names the dataset the model learns from (in the node's inputs and in its log and
    errors); `history_prefix` prefixes the MLflow training curves. supervised_reference reuses this
    pipeline, namespaced, on the true `tile_masks`.
    """
    # update_wrapper: the node keeps the function's name in Kedro's logs.
    train = update_wrapper(
        partial(train_segmentation_model, masks_dataset=masks, history_prefix=history_prefix), train_segmentation_model
    )
    return pipeline(
        [
            node(
                train,
                ["tiles", masks, "tile_index", "params:segmentation_training",
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


def create_pipeline(**kwargs) -> Pipeline:
    """The training pipeline on the pseudo-masks, its predictions then refined (PRC's step 7, off by
    default: `segmentation_training.refine: none` passes them through unchanged)."""
    return pipeline(training_pipeline(), outputs={"predictions": UNREFINED}) + pipeline(
        [
            node(
                refine_predictions,
                [UNREFINED, "cams", "tile_index", "scenes", "prompt_generation_resolved",
                 "params:segmentation_training", "params:sam_labeling", "params:classes"],
                ["predictions", "prediction_refinement_mlflow"],
                name="refine_predictions",
            ),
        ]
    )
