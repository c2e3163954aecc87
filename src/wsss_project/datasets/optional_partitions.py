"""A PartitionedDataset that may hold no partition: loading an empty or missing folder gives {}.

kedro-datasets' PartitionedDataset refuses to load a folder without partitions. The ALPS cluster
maps (segmentation_training.pretrain) are empty by design in a run without ALPS pre-training,
and the node that reads them must then receive "no maps", not an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kedro_datasets.partitions import PartitionedDataset


class OptionalPartitionedDataset(PartitionedDataset):
    """PartitionedDataset whose load gives ``{}`` when there is no partition."""

    def load(self) -> dict[str, Callable[[], Any]]:
        self._invalidate_caches()
        if not self._list_partitions():
            return {}
        return super().load()
