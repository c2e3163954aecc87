"""supervised_reference: the same segmenter (model kind), schedule and seed as segmentation_training, trained on the
true masks of the train tiles: the fully supervised upper reference for the weakly supervised prediction."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
