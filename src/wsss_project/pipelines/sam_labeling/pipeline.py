"""sam_labeling pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import label_tiles


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                label_tiles,
                ["tiles", "cams", "prompts", "tile_index", "params:sam_labeling",
                 "prompt_generation_resolved", "params:classes", "params:device"],
                "pseudo_masks",
                name="label_tiles",
            )
        ]
    )
