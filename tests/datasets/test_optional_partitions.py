"""OptionalPartitionedDataset: an empty or missing folder loads as no partitions."""

from __future__ import annotations

import numpy as np

from wsss_project.datasets import OptionalPartitionedDataset


def _dataset(path):
    return OptionalPartitionedDataset(path=str(path), dataset="wsss_project.datasets.PNGArrayDataset",
                                      filename_suffix=".png", overwrite=True)


def test_a_missing_or_emptied_folder_loads_as_no_partitions(tmp_path):
    assert _dataset(tmp_path / "absent").load() == {} and not _dataset(tmp_path / "absent").exists()
    dataset = _dataset(tmp_path / "maps")
    dataset.save({"a": np.zeros((4, 4), np.uint8)})
    dataset.save({})  # overwrite: the previous run's partitions are removed
    assert dataset.load() == {} and dataset.exists()  # saved, and empty


def test_partitions_load_as_usual(tmp_path):
    dataset = _dataset(tmp_path / "maps")
    dataset.save({"a": np.full((4, 4), 3, np.uint8), "b": np.zeros((2, 2), np.uint8)})
    loaded = dataset.load()
    assert sorted(loaded) == ["a", "b"] and (loaded["a"]() == 3).all()
