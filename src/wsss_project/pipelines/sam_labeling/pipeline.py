"""sam_labeling pipeline: the run's segmenter, built once, then one pseudo-mask per prompted tile
and the masks table (one row per segmenter mask: confidences, IOS, kept or why not)."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import build_segmenter, label_tiles_with_table


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(build_segmenter, ["params:sam_labeling", "params:device"], "segmenter", name="build_segmenter"),
            node(
                label_tiles_with_table,
                ["segmenter", "tiles", "cams", "prompts", "tile_index", "params:sam_labeling",
                 "prompt_generation_resolved", "params:classes", "params:compute", "params:device"],
                ["pseudo_masks", "pseudo_mask_table"],
                name="label_tiles",
            ),
        ]
    )
