"""prompt_generation: APSAM adaptive prompts (boxes and centroid points) from CAM heatmaps."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
