import torch
from kedro.io import Version

from wsss_project.datasets import TorchStateDictDataset


def test_versioned_round_trip_keeps_every_version(tmp_path):
    path = str(tmp_path / "model.pt")
    first = {"w": torch.arange(4.0)}
    TorchStateDictDataset(path, version=Version(None, "2026-01-01T00.00.00.000Z")).save(first)
    TorchStateDictDataset(path, version=Version(None, "2026-01-02T00.00.00.000Z")).save({"w": torch.zeros(4)})
    latest = TorchStateDictDataset(path, version=Version(None, None)).load()
    older = TorchStateDictDataset(path, version=Version("2026-01-01T00.00.00.000Z", None)).load()
    assert torch.equal(latest["w"], torch.zeros(4))
    assert torch.equal(older["w"], first["w"])
