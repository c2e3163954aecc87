"""prompt_generation pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import generate_prompts


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                generate_prompts,
                ["cams", "tile_index", "params:prompt_generation", "params:classes"],
                "prompts",
                name="generate_prompts",
            )
        ]
    )
