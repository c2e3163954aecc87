"""Custom Kedro datasets (only where kedro-datasets has none)."""

from .geopackage import GeoPackageDataset
from .optional_partitions import OptionalPartitionedDataset
from .png_array import PNGArrayDataset
from .scene_raster import SceneRasterDataset, SceneRasterPartitions
from .torch_state_dict import TorchStateDictDataset

__all__ = [
    "GeoPackageDataset", "OptionalPartitionedDataset", "PNGArrayDataset", "SceneRasterDataset",
    "SceneRasterPartitions", "TorchStateDictDataset",
]
