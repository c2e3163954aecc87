"""evaluation: OA, precision, recall, F1, IoU (mIoU) of CAM > T and pseudo-labels (train scenes), and of
the predictions and the supervised reference (test scenes), with their weak-to-full IoU ratio."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
