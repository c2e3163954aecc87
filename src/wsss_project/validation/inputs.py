"""Checks of what the parameters point to: model files, the folder of scenes, the device, and (once
tiled) whether the tile labels can teach anything. Each failure is a UserInputError naming the file
or parameter to fix.

`check_run_inputs` runs before any node (validation/hooks.py) and checks only what the run's
pipeline reads: a `kedro run --pipeline evaluation` does not open the SAM checkpoint.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from wsss_project.errors import UserInputError

PARAMS_PREFIX = "params:"
# The input of the node that encodes texts with CLIP (text_prototype_kb's encode_class_texts).
TEXT_ENCODER_INPUT = "class_descriptions"
# The localizer that reads CLIP too (learning/localizers.py), so its checkpoint is checked up front.
CLIP_METHOD = "clip"


def reads_section(pipeline_inputs: Collection[str], section: str) -> bool:
    """Whether a pipeline reads a parameter section, as `params:<section>` or a namespace's copy
    (`params:prompt_ablation.box.sam_labeling`)."""
    return any(
        name == f"{PARAMS_PREFIX}{section}" or (name.startswith(PARAMS_PREFIX) and name.endswith(f".{section}"))
        for name in pipeline_inputs
    )


def check_run_inputs(params: Mapping[str, Any], pipeline_inputs: Collection[str]) -> None:
    """Everything that can be known before the first node, for the parameters this pipeline reads."""
    if reads_section(pipeline_inputs, "device"):
        check_device(params["device"])
    if reads_section(pipeline_inputs, "data"):
        check_scene_split(params["data"], params["seed"])
    if reads_section(pipeline_inputs, "localization"):
        check_pretrained_backbone(params["localization"], len(params["classes"]))
        if params["localization"]["method"] == CLIP_METHOD:
            check_text_encoder(params["text_prototype_kb"]["clip"])
    if reads_section(pipeline_inputs, "sam_labeling"):
        check_sam_labeling(params["sam_labeling"])
        check_prompt_ablation(params["sam_labeling"], pipeline_inputs)
    if TEXT_ENCODER_INPUT in pipeline_inputs:
        check_text_encoder(params["text_prototype_kb"]["clip"])
    if reads_section(pipeline_inputs, "segmentation_training"):
        check_segmentation_model(params["segmentation_training"], params["text_prototype_kb"])


def check_device(device: str) -> None:
    """`device` names a device this machine has."""
    from wsss_project.utils.device import resolve_device

    resolve_device(device)


def check_scene_split(data: Mapping[str, Any], seed: int) -> None:
    """The scene folder (data.source: folder) gives at least one train and one test scene.

    The split is computed from the file names alone, as data_preparation will: a source (first
    group of data.folder.source_pattern) gives a test scene only when it has two or more scenes.
    """
    if data["source"] != "folder":
        return  # synthetic: data.synthetic.n_scenes >= 2 is checked by the schema
    from wsss_project.imagery.labels import split_scenes
    from wsss_project.imagery.readers import find_scene_files
    from wsss_project.pipelines.data_preparation.nodes import source_of

    folder = data["folder"]
    files = find_scene_files(folder["images_dir"], folder["masks_dir"], folder["extensions"])
    table = pd.DataFrame({"scene_id": [f.scene_id for f in files]})
    table["source"] = [source_of(scene_id, folder.get("source_pattern")) for scene_id in table["scene_id"]]
    splits = set(split_scenes(table, float(data["split"]["test_fraction"]), seed).values())
    if splits != {"train", "test"}:
        per_source = table.groupby("source").size().to_dict()
        raise UserInputError(
            f"parameter `data.folder.images_dir`: {len(files)} scene(s) in {folder['images_dir']} "
            f"(per source: {per_source}) give no {'test' if 'train' in splits else 'train'} scene; a run "
            "needs at least one train and one test scene, and a source (the first group of "
            "data.folder.source_pattern in the file name) gives a test scene only when it has two or "
            "more scenes: add scenes, or change data.folder.source_pattern"
        )


def check_pretrained_backbone(localization: Mapping[str, Any], n_classes: int) -> None:
    """The localization.pretrained_backbone file loads into the declared cam_classifier backbone."""
    if localization.get("method") != "cam_classifier" or localization.get("pretrained_backbone") is None:
        return
    from wsss_project.learning.cam_training import build_cam_classifier

    build_cam_classifier(n_classes, localization, load_pretrained=True)


def check_sam_labeling(sam_labeling: Mapping[str, Any]) -> None:
    """The SAM checkpoint, when SAM will be used, is readable as the declared model type."""
    from wsss_project.segmenters.factory import uses_sam

    sam = sam_labeling["sam"]
    if not uses_sam(sam_labeling) or sam["checkpoint"] is None:
        return
    from wsss_project.foundation.sam import check_sam_checkpoint

    check_sam_checkpoint(sam["model_type"], sam["checkpoint"])


def check_text_encoder(clip: Mapping[str, Any]) -> None:
    """The CLIP checkpoint is set, exists and holds the declared architecture (memory-mapped, no weights loaded)."""
    from wsss_project.foundation.clip import check_clip_checkpoint

    check_clip_checkpoint(clip["model_name"], clip["checkpoint"])


def check_segmentation_model(segmentation_training: Mapping[str, Any], text_prototype_kb: Mapping[str, Any]) -> None:
    """With `model: clip_decoder`, the CLIP checkpoint of text_prototype_kb.clip holds the declared architecture."""
    from wsss_project.learning.segmentation_training import CLIP_DECODER

    if segmentation_training["model"] == CLIP_DECODER:
        check_text_encoder(text_prototype_kb["clip"])


def check_prompt_ablation(sam_labeling: Mapping[str, Any], pipeline_inputs: Collection[str]) -> None:
    """The prompt ablation (its namespaces vary `sam_labeling.prompt_mode`) is not run with
    `segmenter: regions`, which takes no prompts: every row would be the same labelling."""
    from wsss_project.segmenters.factory import REGIONS
    from wsss_project.sweep_variants import PROMPT_ABLATION

    ablation = f"{PARAMS_PREFIX}{PROMPT_ABLATION}."
    if sam_labeling["segmenter"] == REGIONS and any(name.startswith(ablation) for name in pipeline_inputs):
        raise UserInputError(
            "the prompt ablation varies parameter `sam_labeling.prompt_mode`, which `sam_labeling.segmenter: "
            "regions` does not use (regions are voted by their mean CAM, without prompts): run the threshold "
            "sweep's variants alone (--tags threshold_sweep.t050,...), or choose segmenter auto, sam or grabcut"
        )


def check_learnable_labels(tile_index: pd.DataFrame, classes: Sequence[str], split: str = "train") -> None:
    """Every class has a positive and a negative tile in `split`; else say why the run cannot learn.

    The localizer learns where a class is from the contrast between tiles labelled with it and tiles
    without it; with one side missing there is nothing to contrast, and every later stage follows.
    """
    rows = tile_index[tile_index["split"] == split]
    problems = []
    for name in classes:
        labels = rows[name].to_numpy()
        n_positive = int(np.count_nonzero(labels))
        if n_positive == 0:
            problems.append(f"no tile labelled `{name}`")
        elif n_positive == len(labels):
            problems.append(f"no tile without `{name}` (all {len(labels)} are labelled with it)")
    if problems:
        raise UserInputError(
            f"the {len(rows)} {split} tiles have " + " and ".join(problems) + ": the localizer learns where a "
            "class is from tiles with and tiles without it, so this run cannot learn. A tile is labelled "
            "with a class when the class covers at least `data.label_min_fraction` of it; check that the "
            "masks (data.folder.masks_dir) mark the class with its value in `data.folder.mask_class_values` "
            "(or colour in mask_palette), add scenes with and without it, or change data.label_min_fraction"
        )
