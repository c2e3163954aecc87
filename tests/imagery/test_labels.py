import numpy as np
import pandas as pd
import pytest

from wsss_project.imagery.labels import image_level_labels, split_scenes


def test_label_threshold_is_a_fraction_of_valid_pixels():
    mask = np.zeros((100, 100), np.uint8)
    mask[:1, :] = 1  # 100 px = 1% of 10 000
    assert image_level_labels(mask, 1, 0.01).tolist() == [1]
    assert image_level_labels(mask, 1, 0.011).tolist() == [0]
    mask[50:, :] = 255  # half is padding: 100 px are now 2% of the valid pixels
    assert image_level_labels(mask, 1, 0.015).tolist() == [1]


def test_multi_class_labels_are_multi_hot():
    mask = np.zeros((10, 10), np.uint8)
    mask[:5] = 1
    mask[5:, :2] = 3
    assert image_level_labels(mask, 3, 0.1).tolist() == [1, 0, 1]


def test_all_ignore_tile_is_negative():
    assert image_level_labels(np.full((4, 4), 255, np.uint8), 2, 0.01).tolist() == [0, 0]


def _scenes():
    return pd.DataFrame(
        {"scene_id": [f"a_{i}" for i in range(10)] + [f"b_{i}" for i in range(6)],
         "source": ["a"] * 10 + ["b"] * 6}
    )


def test_split_is_by_scene_stratified_and_seeded():
    split = split_scenes(_scenes(), 0.3, seed=1)
    assert split == split_scenes(_scenes(), 0.3, seed=1)
    assert sum(v == "test" for k, v in split.items() if k.startswith("a_")) == 3
    assert sum(v == "test" for k, v in split.items() if k.startswith("b_")) == 2
    different = [split_scenes(_scenes(), 0.3, seed=s) for s in range(2, 6)]
    assert any(d != split for d in different)


def test_every_source_with_two_scenes_gets_a_test_scene():
    scenes = pd.DataFrame({"scene_id": ["x_1", "x_2"], "source": ["x", "x"]})
    assert sorted(split_scenes(scenes, 0.1, 0).values()) == ["test", "train"]


def test_bad_test_fraction_names_parameter():
    with pytest.raises(ValueError, match="data.split.test_fraction"):
        split_scenes(_scenes(), 1.0, 0)
