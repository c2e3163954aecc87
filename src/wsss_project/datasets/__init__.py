"""Custom Kedro datasets (only where kedro-datasets has none)."""

from .png_array import PNGArrayDataset

__all__ = ["PNGArrayDataset"]
