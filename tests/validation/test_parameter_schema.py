"""The parameter schema: the project's parameters validate, and every mistake names its parameter."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_run import TINY_PARAMS
from toy_tiles import toy_tiles

from wsss_project.errors import UserInputError
from wsss_project.foundation.sam import load_sam
from wsss_project.geometry.thresholds import N_LEVELS, choose_threshold
from wsss_project.imagery.labels import split_scenes
from wsss_project.imagery.tiling import tile_stride
from wsss_project.learning.cam_training import bce_pos_weight
from wsss_project.learning.localizers import localizer_for
from wsss_project.learning.mil_training import check_mil_params
from wsss_project.learning.prc import ir_settings, prc_settings
from wsss_project.pipelines.data_preparation.nodes import load_scenes, tile_scenes
from wsss_project.pipelines.prompt_generation.nodes import resolve_prompt_generation
from wsss_project.pipelines.sam_labeling.nodes import TileLabeler
from wsss_project.pipelines.segmentation_training.nodes import refine_predictions
from wsss_project.segmenters.base import prompts_for_mode
from wsss_project.segmenters.factory import build_segmenter
from wsss_project.segmenters.grabcut import GrabCutSegmenter
from wsss_project.segmenters.mask_rules import MaskRule
from wsss_project.segmenters.regions import build_region_source
from wsss_project.segmenters.sam import parse_multimask_output
from wsss_project.settings import CONFIG_LOADER_CLASS
from wsss_project.validation.schema import SECTIONS, check_section, validate_parameters

CONF = Path(__file__).resolve().parents[2] / "conf"
UNEXPECTED = {"unexpected_key": 1}  # no parameter of the project accepts this value


@functools.cache
def _loaded(runtime_json: str) -> dict:
    # the project's loader: it adds the sweep namespaces' parameters (sweep_variants.py)
    loader = CONFIG_LOADER_CLASS(str(CONF), base_env="base", default_run_env="local",
                               runtime_params=json.loads(runtime_json))
    return dict(loader["parameters"])


def _params(runtime: dict | None = None) -> dict:
    """conf/base parameters merged with `runtime` as `kedro run --params` merges them (a fresh copy)."""
    return copy.deepcopy(_loaded(json.dumps(runtime or {}, sort_keys=True)))


def _error(runtime: dict | None = None, params: dict | None = None) -> str:
    with pytest.raises(UserInputError) as info:
        validate_parameters(params if params is not None else _params(runtime))
    return str(info.value)


def _leaves(tree: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Dotted paths of every value that is not a non-empty dict (lists count as values)."""
    paths = []
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            paths += _leaves(value, (*prefix, key))
        else:
            paths.append((*prefix, key))
    return paths


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def _delete(tree: dict, path: tuple[str, ...]) -> None:
    for key in path[:-1]:
        tree = tree[key]
    del tree[path[-1]]


def test_the_base_parameters_and_the_tiny_run_validate():
    validate_parameters(_params())
    validate_parameters(_params(TINY_PARAMS))


def test_the_schema_declares_every_top_level_section_of_the_configuration():
    assert set(_params()) == set(SECTIONS)


@pytest.mark.parametrize("path", _leaves(_params()), ids=".".join)
def test_every_parameter_is_checked_and_a_wrong_value_is_named(path):
    params = _params()
    _set(params, path, UNEXPECTED)
    assert f"`{'.'.join(path)}" in _error(params=params)


@pytest.mark.parametrize("path", [("seed",), ("data", "tile_size"), ("sam_labeling", "sam", "model_type")], ids=".".join)
def test_a_missing_parameter_is_named(path):
    params = _params()
    _delete(params, path)
    assert f"missing parameter `{'.'.join(path)}`" in _error(params=params)


@pytest.mark.parametrize(
    ("runtime", "expected"),
    [
        ({"prompt_generaton": {"threshold": 50}},
         "unknown parameter `prompt_generaton.threshold`; did you mean `prompt_generation.threshold`?"),
        ({"data": {"tile_sise": 128}}, "unknown parameter `data.tile_sise`; did you mean `data.tile_size`?"),
        ({"localization": {"mil": {"widht": 16}}},
         "unknown parameter `localization.mil.widht`; did you mean `localization.mil.width`?"),
        ({"data": {"synthetic": {"generator": {"empty_scene_probabilty": 1.0}}}},
         "unknown parameter `data.synthetic.generator.empty_scene_probabilty`; "
         "did you mean `data.synthetic.generator.empty_scene_probability`?"),
        ({"sam_labeling": {"ios": {"min_overlapp": 0.5}}},
         "unknown parameter `sam_labeling.ios.min_overlapp`; did you mean `sam_labeling.ios.min_overlap`?"),
        ({"sam_labeling": {"min_confidance": 0.5}},
         "unknown parameter `sam_labeling.min_confidance`; did you mean `sam_labeling.min_confidence`?"),
        ({"localization": {"prc_module": {"enable": True}}},
         "unknown parameter `localization.prc_module.enable`; did you mean `localization.prc_module.enabled`?"),
        ({"localization": {"vpe": {"seed_fractoin": 0.2}}},
         "unknown parameter `localization.vpe.seed_fractoin`; did you mean `localization.vpe.seed_fraction`?"),
        ({"localization": {"ir_los": {"weight": 0.5}}},
         "unknown parameter `localization.ir_los.weight`; did you mean `localization.ir_loss.weight`?"),
        # one number in two units would be wrong for one kind of scene: m2 and px are separate keys
        ({"inventory": {"min_area": {"area": 10.0}}},
         "unknown parameter `inventory.min_area.area`; the keys of `inventory.min_area` are ['m2', 'px']"),
    ],
)
def test_a_misspelt_key_gets_the_closest_valid_name(runtime, expected):
    assert expected in _error(runtime)


def test_an_unknown_key_with_no_close_name_lists_the_valid_ones():
    message = _error({"sam_labeling": {"zzz": 1}})
    assert "unknown parameter `sam_labeling.zzz`" in message and "'prompt_mode'" in message


@pytest.mark.parametrize("threshold", [300, -1, "high", True, None])
def test_a_threshold_outside_auto_or_0_to_255_is_named(threshold):
    message = _error({"prompt_generation": {"threshold": threshold}})
    assert "parameter `prompt_generation.threshold` must be 'auto' or a number in 0..255" in message
    assert f"got {threshold!r}" in message


@pytest.mark.parametrize("threshold", ["auto", 0, 120, 255, 127.5])
def test_valid_thresholds_pass(threshold):
    validate_parameters(_params({"prompt_generation": {"threshold": threshold}}))


@pytest.mark.parametrize(
    ("runtime", "parameter"),
    [
        ({"localization": {"method": "cam"}}, "localization.method"),
        ({"localization": {"mil": {"pooling": "max"}}}, "localization.mil.pooling"),
        ({"localization": {"mil": {"pos_weight": -1}}}, "localization.mil.pos_weight"),
        ({"localization": {"output_stride": 4}}, "localization.output_stride"),
        ({"localization": {"blocks": [1, 1, 1]}}, "localization.blocks"),
        ({"localization": {"ir_loss": {"weight": -0.1}}}, "localization.ir_loss.weight"),
        ({"localization": {"ir_loss": {"distance": "l2"}}}, "localization.ir_loss.distance"),
        ({"localization": {"ir_loss": {"decoder_width": 0}}}, "localization.ir_loss.decoder_width"),
        ({"localization": {"prc_module": {"enabled": "true"}}}, "localization.prc_module.enabled"),
        ({"localization": {"prc_module": {"temperature": 0.0}}}, "localization.prc_module.temperature"),
        ({"localization": {"prc_module": {"key_grid": 0}}}, "localization.prc_module.key_grid"),
        ({"localization": {"prc_module": {"projection_dim": 2.5}}}, "localization.prc_module.projection_dim"),
        # 0 would leave the affinity untrained while it still refines every CAM
        ({"localization": {"prc_module": {"refined_loss_weight": 0.0}}}, "localization.prc_module.refined_loss_weight"),
        ({"localization": {"prc_module": {"constraint_weight": -1.0}}}, "localization.prc_module.constraint_weight"),
        ({"segmentation_training": {"augment": "false"}}, "segmentation_training.augment"),  # a string is truthy
        ({"segmentation_training": {"epochs": 2.5}}, "segmentation_training.epochs"),
        ({"segmentation_training": {"optimizer": "sgd"}}, "segmentation_training.optimizer"),
        ({"segmentation_training": {"refine": "sam"}}, "segmentation_training.refine"),
        ({"sam_labeling": {"segmenter": "sam2"}}, "sam_labeling.segmenter"),
        ({"sam_labeling": {"sam": {"model_type": "vit_x"}}}, "sam_labeling.sam.model_type"),
        ({"sam_labeling": {"sam": {"multimask_output": "maybe"}}}, "sam_labeling.sam.multimask_output"),
        ({"sam_labeling": {"prompt_mode": "points"}}, "sam_labeling.prompt_mode"),
        ({"sam_labeling": {"merge": "union"}}, "sam_labeling.merge"),
        ({"sam_labeling": {"ios": {"min_overlap": 1.5}}}, "sam_labeling.ios.min_overlap"),
        ({"sam_labeling": {"ios": {"min_overlap": -0.1}}}, "sam_labeling.ios.min_overlap"),
        ({"sam_labeling": {"min_confidence": 1.2}}, "sam_labeling.min_confidence"),
        ({"sam_labeling": {"confidence": "entropy"}}, "sam_labeling.confidence"),
        ({"sam_labeling": {"sam": {"stability_score_offset": 0.0}}}, "sam_labeling.sam.stability_score_offset"),
        ({"sam_labeling": {"grabcut": {"point_neighbourhood_radius": 1}}},
         "sam_labeling.grabcut.point_neighbourhood_radius"),
        ({"prompt_generation": {"splits": ["validation"]}}, "prompt_generation.splits"),
        ({"prompt_generation": {"auto_threshold": {"rule": "mean"}}}, "prompt_generation.auto_threshold.rule"),
        ({"prompt_generation": {"filters": {"retrieval": "all"}}}, "prompt_generation.filters.retrieval"),
        ({"data": {"overlap": 1.0}}, "data.overlap"),
        ({"data": {"synthetic": {"n_scenes": 1}}}, "data.synthetic.n_scenes"),
        ({"data": {"split": {"test_fraction": 0}}}, "data.split.test_fraction"),
        ({"data": {"folder": {"stretch_percentiles": [98, 2]}}}, "data.folder.stretch_percentiles"),
        ({"data": {"folder": {"source_pattern": "^[a-z]+"}}}, "data.folder.source_pattern"),
        ({"reporting": {"n_sample_tiles": 0}}, "reporting.n_sample_tiles"),
        ({"inventory": {"window_size": 0}}, "inventory.window_size"),
        ({"inventory": {"min_area": {"m2": -1.0}}}, "inventory.min_area.m2"),
        ({"classes": ["landslide", "landslide"]}, "classes"),
        ({"device": "gpu"}, "device"),
        ({"seed": -1}, "seed"),
    ],
)
def test_a_value_outside_its_type_range_or_choices_is_named(runtime, parameter):
    assert f"parameter `{parameter}" in _error(runtime)  # `splits[0]` for an item of a list


def test_every_problem_is_reported_at_once_one_line_each():
    message = _error({"prompt_generation": {"threshold": 300}, "data": {"tile_sise": 1}, "seed": "x"})
    lines = message.splitlines()[1:]
    assert len(lines) == 3
    assert {line.split("`")[1] for line in lines} == {"prompt_generation.threshold", "data.tile_sise", "seed"}


@pytest.mark.parametrize(
    ("runtime", "expected"),
    [
        ({"data": {"source": "folder"}}, "parameter `data.folder.images_dir` must be set when data.source is folder"),
        ({"data": {"source": "folder", "folder": {"images_dir": "x"}}},
         "parameter `data.folder.masks_dir` must be set when data.source is folder"),
        # the synthetic default would run while the user believes it reads their imagery
        ({"data": {"folder": {"images_dir": "my_scenes"}}},
         "parameter `data.folder.images_dir` is set but data.source is synthetic"),
        ({"data": {"source": "folder", "folder": {"images_dir": "a", "masks_dir": "b", "mask_class_values": [1, 2]}}},
         "parameter `data.folder.mask_class_values` has 2 entries for the 1 classes"),
        ({"localization": {"pretrained_backbone": "resnet18.pth"}},
         "parameter `localization.pretrained_backbone` is set but localization.method is mil"),
        ({"sam_labeling": {"segmenter": "sam"}},
         "parameter `sam_labeling.sam.checkpoint` must be set when sam_labeling.segmenter is sam"),
        # a confidence nothing reads, or one the run's segmenter does not measure, would silently do nothing
        ({"sam_labeling": {"confidence": "ios"}},
         "parameter `sam_labeling.confidence` is ios but sam_labeling.min_confidence is null"),
        ({"sam_labeling": {"min_confidence": 0.5, "confidence": "stability_score"}},
         "parameter `sam_labeling.confidence` is stability_score, which only SAM measures, but the run labels with grabcut"),
        ({"segmentation_training": {"crop_size": 100}},
         "parameter `segmentation_training.crop_size` (100) must be divisible by 2**segmentation_training.depth"),
        ({"data": {"tile_size": 120}, "segmentation_training": {"crop_size": None}},
         "parameter `data.tile_size` (120) must be divisible by 2**segmentation_training.depth"),
    ],
)
def test_settings_that_contradict_each_other_are_named(runtime, expected):
    assert expected in _error(runtime)


def test_a_sam_checkpoint_with_grabcut_is_a_warning_not_silence(caplog):
    validate_parameters(_params({"sam_labeling": {"segmenter": "grabcut", "sam": {"checkpoint": "sam.pth"}}}))
    assert "sam.pth is not used" in caplog.text


@pytest.mark.parametrize(("regions", "named"), [
    ({"source": "sam_auto"}, "parameter `sam_labeling.sam.checkpoint` must be set when sam_labeling.regions.source is sam_auto"),
    ({"area_gate": 0}, "parameter `sam_labeling.regions.area_gate`"),
    ({"area_gate": 1.01}, "parameter `sam_labeling.regions.area_gate`"),
    ({"superpixels": {"slic": {"compactness": 0.0}}}, "parameter `sam_labeling.regions.superpixels.slic.compactness`"),
    ({"superpixels": {"felzenszwalb": {"min_size": 0}}}, "parameter `sam_labeling.regions.superpixels.felzenszwalb.min_size`"),
    ({"sam_auto": {"box_nms_thresh": 0.0}}, "parameter `sam_labeling.regions.sam_auto.box_nms_thresh`"),
    ({"sam_auto": {"points_per_sides": 16}}, "did you mean `sam_labeling.regions.sam_auto.points_per_side`?"),
])
def test_bad_region_settings_are_named(regions, named):
    assert named in _error({"sam_labeling": {"segmenter": "regions", "regions": regions}})


@pytest.mark.parametrize("mask_rule", [{"merge": "ios"}, {"min_confidence": 0.5}])
def test_mask_rules_with_region_voting_are_refused_not_ignored(mask_rule):
    # region voting makes no segmenter masks, so neither rule would judge anything
    message = _error({"sam_labeling": {"segmenter": "regions", **mask_rule}})
    assert "`sam_labeling.merge` and `sam_labeling.min_confidence`" in message and "segmenter regions" in message


def test_region_settings_validate_and_a_sam_checkpoint_with_superpixels_is_a_warning(caplog):
    validate_parameters(_params({"sam_labeling": {"segmenter": "regions", "regions": {"area_gate": 1}}}))
    validate_parameters(_params({"sam_labeling": {"segmenter": "regions", "regions": {"source": "sam_auto"},
                                                  "sam": {"checkpoint": "sam.pth"}}}))
    assert "not used" not in caplog.text
    validate_parameters(_params({"sam_labeling": {"segmenter": "regions", "sam": {"checkpoint": "sam.pth"}}}))
    assert "superpixels: sam_labeling.sam.checkpoint sam.pth is not used" in caplog.text


def test_the_default_segmenter_is_still_auto():
    assert _params()["sam_labeling"]["segmenter"] == "auto"


def _build_segmenter(sam_labeling: dict) -> None:
    build_segmenter(sam_labeling, "cpu")


def _prompts_for_mode(sam_labeling: dict) -> None:
    prompts_for_mode(np.zeros((0, 4)), np.zeros((0, 2)), sam_labeling["prompt_mode"])


def _tile_labeler(sam_labeling: dict) -> None:
    TileLabeler(GrabCutSegmenter(sam_labeling["grabcut"]), pd.DataFrame(columns=["tile_id", "class_id"]),
                sam_labeling["prompt_mode"], sam_labeling["unprompted_positive"], None)


def _mask_rule(sam_labeling: dict) -> None:
    MaskRule.from_params(sam_labeling, GrabCutSegmenter(sam_labeling["grabcut"]), 120)


def _mask_rule_ios(ios: dict) -> None:
    _mask_rule({**_params()["sam_labeling"], "ios": ios})


def _refine_predictions(segmentation_training: dict) -> None:
    params = _params()
    refine_predictions({}, {}, pd.DataFrame(), pd.DataFrame(), {"threshold": 100}, segmentation_training,
                       params["sam_labeling"], ["landslide"])


def _refine_predictions_ios(ios: dict) -> None:
    params = _params()
    refine_predictions({}, {}, pd.DataFrame(), pd.DataFrame(), {"threshold": 100},
                       {**params["segmentation_training"], "refine": "ios"}, {**params["sam_labeling"], "ios": ios},
                       ["landslide"])


def _parse_multimask(sam: dict) -> None:
    parse_multimask_output(sam["multimask_output"])


def _load_sam(sam: dict) -> None:
    load_sam(sam["model_type"], "absent.pth", "cpu")


def _load_scenes(data: dict) -> None:
    load_scenes(data, ["landslide"], 0)


def _load_synthetic_scenes(synthetic: dict) -> None:
    load_scenes({**_params()["data"], "synthetic": synthetic}, ["landslide"], 0)


def _load_folder_scenes(folder: dict) -> None:
    load_scenes({**_params()["data"], "source": "folder", "folder": {**folder, "images_dir": "i", "masks_dir": "m"}},
                ["landslide"], 0)


def _split_scenes(split: dict) -> None:
    split_scenes(pd.DataFrame({"scene_id": [], "source": []}), split["test_fraction"], 0)


def _tile_scenes(data: dict) -> None:
    tile_scenes({}, pd.DataFrame(), data, ["landslide"])


def _tile_stride(data: dict) -> None:
    tile_stride(data["tile_size"], data["overlap"])


def _cam_pos_weight(localization: dict) -> None:
    bce_pos_weight(np.eye(2), localization["pos_weight"])


def _mil_pos_weight(mil: dict) -> None:
    bce_pos_weight(np.eye(2), mil["pos_weight"], "localization.mil")


def _ir_settings(ir_loss: dict) -> None:
    ir_settings({"ir_loss": ir_loss})


def _prc_settings(prc_module: dict) -> None:
    prc_settings({"prc_module": prc_module})


def _resolve_threshold(prompt_generation: dict) -> None:
    _, _, cams, index = toy_tiles(2)
    resolve_prompt_generation(cams, index, prompt_generation, ["landslide"])


def _choose_threshold(auto_threshold: dict) -> None:
    hist = np.ones(N_LEVELS, np.int64)
    choose_threshold(hist, hist, auto_threshold["rule"], auto_threshold["negative_quantile"],
                     auto_threshold["fixed_threshold"])


@pytest.mark.parametrize(("section", "key", "value", "check"), [
    ("localization.mil", "topk_fraction", 1.5, check_mil_params),
    ("localization.mil", "lr", 0.0, check_mil_params),
    ("sam_labeling", "segmenter", "sam2", _build_segmenter),
    ("sam_labeling", "prompt_mode", "points", _prompts_for_mode),
    ("sam_labeling", "unprompted_positive", "skip", _tile_labeler),
    ("sam_labeling", "merge", "union", _mask_rule),
    ("sam_labeling", "min_confidence", 1.5, _mask_rule),
    ("sam_labeling.ios", "min_overlap", 1.5, _mask_rule_ios),
    ("sam_labeling.ios", "min_overlap", 1.5, _refine_predictions_ios),
    ("segmentation_training", "refine", "sam", _refine_predictions),
    ("sam_labeling.sam", "multimask_output", "maybe", _parse_multimask),
    ("sam_labeling.sam", "model_type", "vit_x", _load_sam),
    ("sam_labeling.grabcut", "iterations", 0, GrabCutSegmenter),
    ("sam_labeling.grabcut", "point_neighbourhood_radius", 0, GrabCutSegmenter),
    ("sam_labeling.regions", "source", "watershed", build_region_source),
    ("sam_labeling.regions", "area_gate", 1.5, build_region_source),
    ("data", "source", "s3", _load_scenes),
    ("data.synthetic", "n_scenes", 1, _load_synthetic_scenes),
    ("data.folder", "stretch_percentiles", [98.0, 2.0], _load_folder_scenes),
    ("data.folder", "stretch_sample_pixels", 0, _load_folder_scenes),
    ("data.split", "test_fraction", 1.0, _split_scenes),
    ("data", "label_min_fraction", 0.0, _tile_scenes),
    ("data", "overlap", 1.0, _tile_stride),
    ("localization", "pos_weight", "auto", _cam_pos_weight),
    ("localization.mil", "pos_weight", -1.0, _mil_pos_weight),
    ("localization", "method", "cam", localizer_for),
    ("localization.ir_loss", "distance", "l2", _ir_settings),
    ("localization.prc_module", "refined_loss_weight", 0.0, _prc_settings),
    ("prompt_generation", "threshold", 300, _resolve_threshold),
    ("prompt_generation", "threshold", "high", _resolve_threshold),
    ("prompt_generation.auto_threshold", "rule", "median", _choose_threshold),
    ("prompt_generation.auto_threshold", "negative_quantile", 1.0, _choose_threshold),
])
def test_code_reading_a_section_applies_the_schemas_rule(section, key, value, check):
    """One rule, written once: a node or segmenter called outside a run says what the run's check says."""
    *parents, last = section.split(".")
    good = functools.reduce(lambda params, part: params[part], [*parents, last], _params())
    with pytest.raises(UserInputError) as at_node:
        check({**good, key: value})
    run_message = _error(functools.reduce(lambda inner, part: {part: inner}, reversed(section.split(".")),
                                          {key: value}))
    assert f"`{section}.{key}`" in str(at_node.value) and str(at_node.value) in run_message


def test_a_partial_check_names_the_bad_keys_present_and_not_the_missing_ones():
    check_section({"threshold": 90}, "prompt_generation", partial=True)
    with pytest.raises(UserInputError, match="missing parameter `prompt_generation.splits`"):
        check_section({"threshold": 90}, "prompt_generation")
    with pytest.raises(UserInputError) as info:
        check_section({"threshold": -1}, "prompt_generation", partial=True)
    assert str(info.value) == "parameter `prompt_generation.threshold` must be 'auto' or a number in 0..255, got -1"


def test_check_section_needs_a_section_of_the_schema():
    with pytest.raises(ValueError, match="no parameter section `localization.nope`"):
        check_section({}, "localization.nope")


@pytest.mark.parametrize(("training", "named"), [
    ({"pretrain": "alsp"}, "parameter `segmentation_training.pretrain`"),
    ({"alps": {"n_clusters": 255}}, "parameter `segmentation_training.alps.n_clusters`"),
    ({"alps": {"n_clusters": 1}}, "parameter `segmentation_training.alps.n_clusters`"),
    ({"alps": {"kmeans_batch_tiles": 0}}, "parameter `segmentation_training.alps.kmeans_batch_tiles`"),
    ({"alps": {"epoch": 3}}, "did you mean `segmentation_training.alps.epochs`?"),
])
def test_bad_alps_settings_are_named(training, named):
    assert named in _error({"segmentation_training": training})


def test_alps_on_sam_regions_needs_a_checkpoint():
    runtime = {"segmentation_training": {"pretrain": "alps"}, "sam_labeling": {"regions": {"source": "sam_auto"}}}
    assert ("parameter `sam_labeling.sam.checkpoint` must be set when segmentation_training.pretrain is alps"
            in _error(runtime))
    validate_parameters(_params({"segmentation_training": {"pretrain": "alps"}}))  # superpixels need no SAM


def test_the_default_is_no_pretraining():
    assert _params()["segmentation_training"]["pretrain"] == "none"
