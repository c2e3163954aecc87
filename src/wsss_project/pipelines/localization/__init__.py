"""localization: a CAM classifier trained on image-level labels, and a CAM heatmap per tile and class."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
