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
    """PartitionedDataset whose load gives ``{}`` when there is no partition.

    Saving no partition leaves an empty folder, so that "saved, and empty" exists, as a saved
    dataset should, while "never saved" does not.
    """

    def load(self) -> dict[str, Callable[[], Any]]:
        self._invalidate_caches()
        if not self._list_partitions():
            return {}
        return super().load()

    def save(self, data: dict[str, Any]) -> None:
        super().save(data)
        if not data:
            self._filesystem.mkdirs(self._normalized_path, exist_ok=True)

    def _exists(self) -> bool:
        return bool(self._filesystem.exists(self._normalized_path))
