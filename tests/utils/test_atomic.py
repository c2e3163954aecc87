"""utils/atomic.py: a write either completes or leaves the old file and no temporary file."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch
from kedro.io import DatasetError

from wsss_project.datasets.png_array import read_png, write_png_atomic
from wsss_project.datasets.torch_state_dict import TorchStateDictDataset
from wsss_project.utils.atomic import TEMP_SUFFIX, atomic_path, write_bytes_atomic


def _half_then(error: BaseException):
    """A writer that leaves half its data in the temporary file, then fails."""

    def write(tmp):
        tmp.write_bytes(b"half of the new")
        raise error

    return write


def test_writes_and_replaces(tmp_path):
    target = tmp_path / "deep" / "er" / "file.bin"
    write_bytes_atomic(target, b"first")
    write_bytes_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["file.bin"]


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_an_error_mid_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, error):
    target = tmp_path / "file.png"
    target.write_bytes(b"old complete content")
    with pytest.raises(type(error)):
        with atomic_path(target) as tmp:
            _half_then(error)(tmp)
    assert target.read_bytes() == b"old complete content"
    assert os.listdir(tmp_path) == ["file.png"]


def test_an_error_on_a_new_file_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "new.pt") as tmp:
            _half_then(RuntimeError("boom"))(tmp)
    assert os.listdir(tmp_path) == []


def test_the_temporary_file_is_hidden_beside_the_target_and_not_a_partition(tmp_path):
    target = tmp_path / "tile.png"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.is_file()
        assert tmp.name.startswith(".tile.png.") and tmp.name.endswith(TEMP_SUFFIX)
        assert not tmp.name.endswith(".png")  # a PartitionedDataset listing *.png never sees it
        assert not target.exists()  # the target appears only once the write is complete
        tmp.write_bytes(b"x")
    assert target.read_bytes() == b"x" and not tmp.exists()


def test_the_file_gets_the_usual_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    write_bytes_atomic(tmp_path / "f", b"x")
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o666 & ~umask


def test_a_failed_png_save_keeps_the_old_png(tmp_path, monkeypatch):
    target = tmp_path / "mask.png"
    old = np.full((4, 5), 7, np.uint8)
    write_png_atomic(target, old)
    monkeypatch.setattr("wsss_project.utils.atomic.os.replace", _raise(OSError("rename failed")))
    with pytest.raises(OSError, match="rename failed"):
        write_png_atomic(target, np.zeros((4, 5), np.uint8))
    assert np.array_equal(read_png(target), old)
    assert os.listdir(tmp_path) == ["mask.png"]


def test_a_failed_state_dict_save_leaves_no_version_file(tmp_path, monkeypatch):
    dataset = TorchStateDictDataset(str(tmp_path / "model.pt"))
    monkeypatch.setattr("wsss_project.datasets.torch_state_dict.torch.save", _half_torch_save)
    with pytest.raises(DatasetError, match="interrupted"):
        dataset.save({"w": torch.zeros(3)})
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def _raise(error: BaseException):
    def fail(*args, **kwargs):
        raise error

    return fail


def _half_torch_save(obj, path):
    with open(path, "wb") as handle:
        handle.write(b"PK\x03\x04 half a zip")
    raise RuntimeError("interrupted")
