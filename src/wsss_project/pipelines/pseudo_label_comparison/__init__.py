"""pseudo_label_comparison: the same train tiles labelled by each declared pseudo-labeller, timed and
scored against the train tiles' masks, gathered into one table and figure."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
