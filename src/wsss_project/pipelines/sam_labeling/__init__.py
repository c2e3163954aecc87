"""sam_labeling: pseudo-masks from a promptable segmenter (SAM, or the weight-free GrabCut)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
