"""Custom Kedro datasets (only where kedro-datasets has none)."""

from .png_array import PNGArrayDataset
from .torch_state_dict import TorchStateDictDataset

__all__ = ["PNGArrayDataset", "TorchStateDictDataset"]
