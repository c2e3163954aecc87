import numpy as np
import pytest
from kedro.io import DatasetError

from wsss_project.datasets import PNGArrayDataset


@pytest.mark.parametrize("shape", [(17, 23, 3), (17, 23)])
def test_round_trip_is_lossless(tmp_path, shape):
    array = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    dataset = PNGArrayDataset(str(tmp_path / "sub" / "a.png"))
    dataset.save(array)
    np.testing.assert_array_equal(dataset.load(), array)
    assert dataset.exists()
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.png"]  # no temporary left behind


def test_rejects_non_uint8_and_keeps_the_old_file(tmp_path):
    dataset = PNGArrayDataset(str(tmp_path / "a.png"))
    dataset.save(np.zeros((4, 4), np.uint8))
    with pytest.raises(DatasetError, match="a.png"):
        dataset.save(np.zeros((4, 4), np.float32))
    np.testing.assert_array_equal(dataset.load(), np.zeros((4, 4), np.uint8))
