"""segmentation_training: the segmenter (`model`: ResUNet or the CLIP decoder) trained on the pseudo-masks, predicting whole test scenes."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
