"""Checks of the files and data the parameters point to: each failure names the file or parameter."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from toy_tiles import PRC_OFF

from wsss_project.errors import UserInputError
from wsss_project.foundation.sam import check_sam_checkpoint
from wsss_project.validation.inputs import (
    check_learnable_labels,
    check_pretrained_backbone,
    check_run_inputs,
    check_scene_split,
)

FOLDER = {
    "extensions": [".png"], "mask_class_values": [255], "mask_palette": None,
    "source_pattern": "^([A-Za-z]+)[_-]", "rgb_bands": None, "stretch_percentiles": [2.0, 98.0], "radiometry": "stretch",
    "stretch_sample_pixels": 4194304,
}
LOCALIZATION = {"method": "cam_classifier", "backbone": "small", "base_width": 8, "blocks": [1, 1, 1, 1],
                "output_stride": 16, **PRC_OFF}


def _scene_folder(tmp_path, names: list[str]) -> dict:
    """`data` parameters of a folder source holding these scenes (4x4 PNGs with masks)."""
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    for name in names:
        cv2.imwrite(str(tmp_path / "images" / f"{name}.png"), np.zeros((4, 4, 3), np.uint8))
        cv2.imwrite(str(tmp_path / "masks" / f"{name}.png"), np.zeros((4, 4), np.uint8))
    folder = {**FOLDER, "images_dir": str(tmp_path / "images"), "masks_dir": str(tmp_path / "masks")}
    return {"source": "folder", "folder": folder, "split": {"test_fraction": 0.3}}


@pytest.fixture
def corrupt_file(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


# --------------------------------------------------------------------------- SAM checkpoint


def test_a_missing_sam_checkpoint_names_the_file_and_parameter(tmp_path):
    missing = tmp_path / "sam_vit_b_01ec64.pth"
    with pytest.raises(UserInputError, match="sam_labeling.sam.checkpoint") as info:
        check_sam_checkpoint("vit_b", missing)
    assert str(missing) in str(info.value)


@pytest.mark.parametrize("damage", ["random_bytes", "truncated"])
def test_a_corrupt_sam_checkpoint_is_not_a_readable_checkpoint(tmp_path, corrupt_file, damage):
    path = corrupt_file
    if damage == "truncated":  # a download cut short: half a real zip checkpoint
        torch.save({"image_encoder.pos_embed": torch.zeros(1, 64, 64, 768)}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserInputError) as info:
        check_sam_checkpoint("vit_b", path)
    message = str(info.value)
    assert f"file {path} is not a readable SAM checkpoint (parameter `sam_labeling.sam.checkpoint`)" in message
    assert "weights_only=False" not in message  # torch's advice is no advice for a broken file


def test_a_checkpoint_of_other_tensors_does_not_hold_the_declared_model_type(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3)}, path)
    with pytest.raises(UserInputError, match="does not hold a SAM `sam_labeling.sam.model_type: vit_b`") as info:
        check_sam_checkpoint("vit_b", path)
    assert str(path) in str(info.value) and "missing tensors" in str(info.value)


def test_an_unknown_sam_model_type_is_named(tmp_path):
    with pytest.raises(UserInputError, match="sam_labeling.sam.model_type"):
        check_sam_checkpoint("vit_x", tmp_path / "x.pth")


# --------------------------------------------------------------------------- pretrained backbone


def test_a_corrupt_pretrained_backbone_is_not_a_readable_checkpoint(corrupt_file):
    with pytest.raises(UserInputError) as info:
        check_pretrained_backbone({**LOCALIZATION, "pretrained_backbone": str(corrupt_file)}, 1)
    assert (f"file {corrupt_file} is not a readable pretrained backbone checkpoint "
            "(parameter `localization.pretrained_backbone`)") in str(info.value)


def test_a_backbone_of_another_architecture_is_named(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3)}, path)
    with pytest.raises(UserInputError, match="localization.pretrained_backbone.*localization.backbone"):
        check_pretrained_backbone({**LOCALIZATION, "pretrained_backbone": str(path)}, 1)


def test_no_pretrained_backbone_is_nothing_to_check():
    check_pretrained_backbone({**LOCALIZATION, "pretrained_backbone": None}, 1)


# --------------------------------------------------------------------------- the scene folder


@pytest.mark.parametrize(
    "names",
    [["bijie_001"], ["bijie_001", "sichuan_001"]],  # one scene; two sources of one scene each
    ids=["one_scene", "one_scene_per_source"],
)
def test_a_folder_without_a_test_scene_is_named_before_the_run(tmp_path, names):
    with pytest.raises(UserInputError, match="parameter `data.folder.images_dir`") as info:
        check_scene_split(_scene_folder(tmp_path, names), seed=0)
    assert "give no test scene" in str(info.value) and "source_pattern" in str(info.value)


def test_two_scenes_of_one_source_give_a_train_and_a_test_scene(tmp_path):
    check_scene_split(_scene_folder(tmp_path, ["bijie_001", "bijie_002"]), seed=0)


# --------------------------------------------------------------------------- what the pipeline reads


def test_only_the_parameters_the_pipeline_reads_are_checked(tmp_path, corrupt_file):
    params = {
        "device": "cpu", "seed": 0, "classes": ["landslide"],
        "data": _scene_folder(tmp_path, ["bijie_001"]),
        "localization": {**LOCALIZATION, "pretrained_backbone": str(corrupt_file)},
        "sam_labeling": {"segmenter": "auto", "sam": {"checkpoint": str(corrupt_file), "model_type": "vit_b"}},
    }
    check_run_inputs(params, {"params:classes", "params:prompt_generation"})  # e.g. prompt_generation alone
    for reads, named in (("params:data", "data.folder.images_dir"),
                         ("params:localization", "localization.pretrained_backbone"),
                         ("params:sam_labeling", "sam_labeling.sam.checkpoint")):
        with pytest.raises(UserInputError, match=named.replace(".", r"\.")):
            check_run_inputs(params, {reads})


def test_a_namespace_s_copy_of_a_section_counts_as_reading_it(corrupt_file):
    labeling = {"segmenter": "auto", "sam": {"checkpoint": str(corrupt_file), "model_type": "vit_b"}}
    with pytest.raises(UserInputError, match="sam_labeling.sam.checkpoint"):
        check_run_inputs({"sam_labeling": labeling}, {"params:prompt_ablation.box.sam_labeling"})
    check_run_inputs({"sam_labeling": labeling}, {"params:sam_labeling_notes"})  # another section


def test_grabcut_does_not_open_the_sam_checkpoint(corrupt_file):
    labeling = {"segmenter": "grabcut", "sam": {"checkpoint": str(corrupt_file), "model_type": "vit_b"}}
    check_run_inputs({"sam_labeling": labeling}, {"params:sam_labeling"})


def test_superpixel_regions_do_not_open_the_sam_checkpoint_and_sam_auto_does(corrupt_file):
    labeling = {"segmenter": "regions", "regions": {"source": "superpixels"},
                "sam": {"checkpoint": str(corrupt_file), "model_type": "vit_b"}}
    check_run_inputs({"sam_labeling": labeling}, {"params:sam_labeling"})
    with pytest.raises(UserInputError, match="sam_labeling.sam.checkpoint"):
        check_run_inputs({"sam_labeling": {**labeling, "regions": {"source": "sam_auto"}}}, {"params:sam_labeling"})


def test_the_prompt_ablation_is_refused_with_regions_and_the_threshold_sweep_is_not():
    labeling = {"segmenter": "regions", "regions": {"source": "superpixels"},
                "sam": {"checkpoint": None, "model_type": "vit_b"}}
    with pytest.raises(UserInputError, match="sam_labeling.prompt_mode"):
        check_run_inputs({"sam_labeling": labeling}, {"params:sam_labeling", "params:prompt_ablation.box.sam_labeling"})
    check_run_inputs({"sam_labeling": labeling}, {"params:sam_labeling", "params:threshold_sweep.t050.prompt_generation"})
    check_run_inputs({"sam_labeling": {**labeling, "segmenter": "grabcut"}},
                     {"params:sam_labeling", "params:prompt_ablation.box.sam_labeling"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has CUDA")
def test_a_device_this_machine_lacks_is_named():
    with pytest.raises(UserInputError, match="parameter `device`"):
        check_run_inputs({"device": "cuda"}, {"params:device"})


# --------------------------------------------------------------------------- tile labels


def _index(labels: list[int], split: str = "train") -> pd.DataFrame:
    return pd.DataFrame({"tile_id": [f"t{i}" for i in range(len(labels))], "split": split, "landslide": labels})


@pytest.mark.parametrize(("labels", "why"), [([0, 0, 0], "no tile labelled `landslide`"),
                                             ([1, 1], "no tile without `landslide` (all 2 are labelled with it)")])
def test_tiles_without_contrast_say_why_the_run_cannot_learn(labels, why):
    index = pd.concat([_index(labels), _index([0, 1], "test")])  # test tiles do not count
    with pytest.raises(UserInputError) as info:
        check_learnable_labels(index, ["landslide"])
    message = str(info.value)
    assert why in message and "cannot learn" in message
    assert "data.label_min_fraction" in message and "data.folder.mask_class_values" in message


def test_a_positive_and_a_negative_tile_per_class_can_learn():
    check_learnable_labels(_index([0, 1, 0]), ["landslide"])
