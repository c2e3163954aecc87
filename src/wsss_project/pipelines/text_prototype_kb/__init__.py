"""text_prototype_kb: CLIP text prototypes of the run's classes (seed 003, TPE §3.2, eq. 1-4)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
