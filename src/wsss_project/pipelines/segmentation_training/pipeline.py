"""segmentation_training pipeline."""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import (
    CLUSTER_MAPS_DATASET,
    HISTORY_PREFIX,
    MASKS_DATASET,
    classify_scenes,
    cluster_regions,
    predict_scenes,
    pretrain_segmentation_model,
    refine_predictions,
    train_segmentation_model,
)

PRETRAINED_BODY = "segmentation_pretrained_body"
PROBABILITIES = "prediction_probabilities"  # per test scene; `predictions` are their decision
UNREFINED = "unrefined_predictions"  # the ResUNet's scene predictions before segmentation_training.refine


def training_pipeline(
    masks: str = MASKS_DATASET, history_prefix: str = HISTORY_PREFIX, pretrained_body: str | None = None,
) -> Pipeline:
    """Train `segmentation_training.model` (ResUNet or the CLIP decoder, whose frozen CLIP is
    `text_prototype_kb.clip`) on the train tiles' `masks` and predict the test scenes: their probability
    rasters (streamed tile batch by tile batch into `prediction_probabilities`), then `predictions`, the
    decision read back from them window by window.

    `masks` names the dataset the model learns from (in the node's inputs and in its log and
    errors); `history_prefix` prefixes the MLflow training curves; `pretrained_body` names the
    dataset of a pre-trained body to start from (None: seeded random weights). supervised_reference
    reuses this pipeline, namespaced, on the true `tile_masks` and without a pre-trained body: it
    stays the from-scratch ceiling, so a weak-side lever such as ALPS moves only the numerator of
    weak_to_full_ratio.
    """
    # update_wrapper: the node keeps the function's name in Kedro's logs.
    train = update_wrapper(
        partial(train_segmentation_model, masks_dataset=masks, history_prefix=history_prefix), train_segmentation_model
    )
    return pipeline(
        [
            node(
                train,
                ["tiles", masks, "tile_index", "params:segmentation_training", "params:classes", "params:seed",
                 "params:device", "params:text_prototype_kb", *([pretrained_body] if pretrained_body else [])],
                ["segmentation_model", "segmentation_training_history", "segmentation_training_curves"],
                name="train_segmentation_model",
            ),
            node(
                predict_scenes,
                ["tiles", "tile_index", "scenes", "segmentation_model", "params:segmentation_training",
                 "params:classes", "params:device", "params:text_prototype_kb", "params:data", "params:compute"],
                PROBABILITIES,
                name="predict_scenes",
            ),
            node(classify_scenes, [PROBABILITIES, "params:classes"], "predictions", name="classify_scenes"),
        ]
    )


def alps_pretraining_pipeline() -> Pipeline:
    """ALPS (`segmentation_training.pretrain: alps`): cluster maps of the train tiles, then the ResUNet
    pre-trained on them. Declared in every run; with `pretrain: none` both nodes return empty
    results (see nodes.py)."""
    return pipeline(
        [
            node(
                cluster_regions,
                ["tiles", "tile_index", "cam_model", "params:segmentation_training", "params:sam_labeling",
                 "params:localization", "params:classes", "params:seed", "params:device", "params:text_prototype_kb"],
                [CLUSTER_MAPS_DATASET, "alps_cluster_table"],
                name="cluster_regions",
            ),
            node(
                pretrain_segmentation_model,
                ["tiles", CLUSTER_MAPS_DATASET, "tile_index", "params:segmentation_training", "params:seed",
                 "params:device"],
                [PRETRAINED_BODY, "segmentation_pretraining_curves"],
                name="pretrain_segmentation_model",
            ),
        ]
    )


def create_pipeline(**kwargs) -> Pipeline:
    """ALPS pre-training (off by default: its nodes return empty results), the training pipeline on the
    pseudo-masks, and its predictions refined (PRC's step 7, off by default: `segmentation_training.refine:
    none` passes them through unchanged)."""
    trained = pipeline(training_pipeline(pretrained_body=PRETRAINED_BODY), outputs={"predictions": UNREFINED})
    return alps_pretraining_pipeline() + trained + pipeline(
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
