"""prompt_generation pipeline: T (auto or given) -> APG prompts."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import generate_prompts, resolve_prompt_generation


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                resolve_prompt_generation,
                ["cams", "tile_index", "params:prompt_generation", "params:classes"],
                ["prompt_generation_resolved", "prompt_threshold_mlflow"],
                name="resolve_prompt_generation",
            ),
            node(
                generate_prompts,
                ["cams", "tile_index", "prompt_generation_resolved", "params:classes"],
                "prompts",
                name="generate_prompts",
            ),
        ]
    )
