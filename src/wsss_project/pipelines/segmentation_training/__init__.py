"""segmentation_training: a ResUNet trained on the pseudo-masks, predicting whole test scenes."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
