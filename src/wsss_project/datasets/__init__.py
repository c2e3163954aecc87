"""Custom Kedro datasets (only where kedro-datasets has none)."""

from .geopackage import GeoPackageDataset
from .optional_partitions import OptionalPartitionedDataset
from .png_array import PNGArrayDataset
from .torch_state_dict import TorchStateDictDataset

__all__ = ["GeoPackageDataset", "OptionalPartitionedDataset", "PNGArrayDataset", "TorchStateDictDataset"]
