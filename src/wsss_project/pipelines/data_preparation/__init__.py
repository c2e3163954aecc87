"""data_preparation: scenes -> split -> tiles with image-level labels."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
