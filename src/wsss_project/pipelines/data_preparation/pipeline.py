"""data_preparation pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import load_scenes, split_scene_table, tile_scenes


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(load_scenes, ["params:data", "params:classes", "params:seed"], "scenes_raw", name="load_scenes"),
            node(split_scene_table, ["scenes_raw", "params:data", "params:seed"], "scenes", name="split_scenes"),
            node(
                tile_scenes,
                ["scenes_raw", "scenes", "params:data", "params:classes"],
                ["tile_index", "tiles", "tile_masks"],
                name="tile_scenes",
            ),
        ]
    )
