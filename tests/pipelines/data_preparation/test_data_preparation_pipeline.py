"""data_preparation on real imagery and on bad input."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from wsss_project.imagery.tiling import TileWindow, stitch_mean
from wsss_project.pipelines.data_preparation import create_pipeline
from wsss_project.pipelines.data_preparation.nodes import (
    load_scenes,
    split_scene_table,
    tile_scenes,
)

DATA = {
    "source": "folder",
    "synthetic": {"n_scenes": 2, "height": 64, "width": 64, "generator": {}},
    "folder": {
        "images_dir": None, "masks_dir": None, "extensions": [".png", ".jpg", ".tif"],
        "mask_class_values": [255], "mask_palette": None, "source_pattern": "^([A-Za-z]+)[_-]",
    },
    "tile_size": 256, "overlap": 0.4, "label_min_fraction": 0.01, "split": {"test_fraction": 0.3},
}


def _run(data: dict, classes=("landslide",), seed: int = 0) -> dict:
    catalog = DataCatalog(
        {"params:data": MemoryDataset(data), "params:classes": MemoryDataset(list(classes)), "params:seed": MemoryDataset(seed)}
    )
    for name in ("scenes_raw", "scenes", "tile_index", "tiles", "tile_masks"):
        catalog[name] = MemoryDataset(copy_mode="assign")
    outputs = SequentialRunner().run(create_pipeline(), catalog)
    return {name: dataset.load() for name, dataset in outputs.items()}


@pytest.fixture
def real_subset(real_data, tmp_path):
    """Four bijie and four sichuan scenes copied to a temporary folder."""
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    names = sorted(p.name for p in (real_data / "images").iterdir())
    chosen = [n for n in names if n.startswith("bijie")][:4] + [n for n in names if n.startswith("sichuan")][:4]
    for name in chosen:
        for sub in ("images", "masks"):
            shutil.copy(real_data / sub / name, tmp_path / sub / name)
    return tmp_path


def test_real_landslides_give_labelled_tiles_split_by_scene(real_subset):
    data = {**DATA, "folder": {**DATA["folder"], "images_dir": str(real_subset / "images"), "masks_dir": str(real_subset / "masks")}}
    out = _run(data)
    index = out["tile_index"]
    assert list(index.columns[:8]) == ["tile_id", "scene_id", "source", "row", "col", "height", "width", "split"]
    assert set(index["landslide"]) == {0, 1}  # positive and negative tiles
    assert set(index["split"]) == {"train", "test"}
    train_scenes = set(index.loc[index.split == "train", "scene_id"])
    assert not train_scenes & set(index.loc[index.split == "test", "scene_id"])
    assert (index.groupby("source")["split"].nunique() == 2).all()  # stratified: both splits per source
    # Labels agree with the masks; test tiles stitch back to the original mask.
    for tile in index.itertuples():
        mask = out["tile_masks"][tile.tile_id]
        valid = mask[mask != 255]
        assert tile.landslide == int((valid == 1).mean() >= 0.01)
    scene_id = index.loc[index.split == "test", "scene_id"].iloc[0]
    original = cv2.imread(str(real_subset / "masks" / f"{scene_id}.png"), cv2.IMREAD_GRAYSCALE)
    tiles = index[index.scene_id == scene_id]
    stitched = stitch_mean(
        [(TileWindow(t.row, t.col, t.height, t.width), out["tile_masks"][t.tile_id]) for t in tiles.itertuples()],
        *original.shape,
    )
    np.testing.assert_array_equal(stitched.astype(np.uint8), (original == 255).astype(np.uint8))


def _folder(tmp_path, n=3, size=(40, 50)):
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(tmp_path / "images" / f"a_{i}.png"), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        mask = np.zeros(size, np.uint8)
        mask[5:15, 5:25] = 255
        cv2.imwrite(str(tmp_path / "masks" / f"a_{i}.png"), mask)
    return {**DATA, "tile_size": 32, "folder": {**DATA["folder"], "images_dir": str(tmp_path / "images"), "masks_dir": str(tmp_path / "masks")}}


def test_small_folder_runs(tmp_path):
    out = _run(_folder(tmp_path))
    assert len(out["tile_index"]) > 0 and set(out["tile_index"]["landslide"]) == {0, 1}


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda d: (d / "masks" / "a_1.png").unlink(), "a_1.png"),
        (lambda d: (d / "images" / "a_2.png").write_bytes(b"not a png"), "a_2.png"),
        (lambda d: cv2.imwrite(str(d / "masks" / "a_0.png"), np.zeros((10, 10), np.uint8)), "a_0.png"),
        (lambda d: cv2.imwrite(str(d / "masks" / "a_0.png"), np.full((40, 50), 7, np.uint8)), "a_0.png"),
        (lambda d: [p.unlink() for p in (d / "images").iterdir()], "data.folder.images_dir"),
    ],
    ids=["mask missing", "unreadable image", "mask of another size", "mask values match no class", "no images"],
)
def test_bad_input_is_named_and_nothing_is_returned(tmp_path, breakage, message):
    data = _folder(tmp_path)
    breakage(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=message.replace(".", r"\.")):
        load_scenes(data, ["landslide"], 0)


def test_bad_source_and_missing_dirs_name_the_parameter(tmp_path):
    with pytest.raises(ValueError, match="data.source"):
        load_scenes({**DATA, "source": "s3"}, ["landslide"], 0)
    with pytest.raises(ValueError, match="data.folder.images_dir"):
        load_scenes(DATA, ["landslide"], 0)


def test_synthetic_source_is_seeded():
    data = {**DATA, "source": "synthetic", "tile_size": 32}
    first, second = load_scenes(data, ["landslide"], 5), load_scenes(data, ["landslide"], 5)
    assert all(np.array_equal(first[k].image, second[k].image) for k in first)
    scenes = split_scene_table(first, data, 5)
    index, tiles, masks = tile_scenes(first, scenes, data, ["landslide"])
    assert set(tiles) == set(masks) == set(index["tile_id"])
    assert isinstance(index, pd.DataFrame)
