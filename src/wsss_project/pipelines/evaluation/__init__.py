"""evaluation: OA, precision, recall, F1, IoU (mIoU) of CAM > T, pseudo-labels and predictions."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
