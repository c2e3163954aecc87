"""localization pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import generate_cams, score_classifier, train_cam_model

# Read by `localization.method: clip` only; `text_prototypes` loads empty before text_prototype_kb ran.
CLIP_INPUTS = ("text_prototypes", "params:text_prototype_kb")


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                train_cam_model,
                ["tiles", "tile_index", "params:localization", "params:classes", "params:seed", "params:device",
                 *CLIP_INPUTS],
                ["cam_model", "cam_training_history", "cam_training_curves"],
                name="train_cam_model",
            ),
            node(
                generate_cams,
                ["tiles", "tile_index", "cam_model", "params:localization", "params:classes", "params:device",
                 *CLIP_INPUTS, "params:compute"],
                "cams",
                name="generate_cams",
            ),
            node(
                score_classifier,
                ["tiles", "tile_index", "cam_model", "params:localization", "params:classes", "params:device",
                 *CLIP_INPUTS],
                "classifier_scores",
                name="score_classifier",
            ),
        ]
    )
