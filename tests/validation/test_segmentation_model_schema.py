"""The schema's rules for `segmentation_training.model` and its `clip_decoder` section."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_parameter_schema import _error, _params

from wsss_project.errors import UserInputError
from wsss_project.learning.clip_decoder_training import CLIP_DECODER_DEFAULTS
from wsss_project.learning.segmentation_training import RESUNET_ONLY_DEFAULTS
from wsss_project.validation.inputs import check_run_inputs
from wsss_project.validation.schema import validate_parameters

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"
CLIP = {"segmentation_training": {"model": "clip_decoder"}}


def test_the_shipped_clip_decoder_section_is_the_one_the_schema_compares_with():
    shipped = yaml.safe_load((CONF / "parameters_segmentation_training.yml").read_text())
    assert shipped["segmentation_training"]["clip_decoder"] == dict(CLIP_DECODER_DEFAULTS)
    assert shipped["segmentation_training"]["model"] == "resunet"


def test_the_shipped_resunet_keys_are_the_ones_the_schema_compares_with():
    shipped = yaml.safe_load((CONF / "parameters_segmentation_training.yml").read_text())["segmentation_training"]
    assert {key: shipped[key] for key in RESUNET_ONLY_DEFAULTS} == dict(RESUNET_ONLY_DEFAULTS)


@pytest.mark.parametrize("change", [{"epochs": 3}, {"lr": 0.01}, {"base_width": 8}, {"image_mean": [0.5, 0.5, 0.5]}])
def test_a_resunet_setting_changed_while_the_clip_decoder_trains_is_an_error_naming_it(change):
    key = next(iter(change))
    message = _error({"segmentation_training": {"model": "clip_decoder", **change}})
    assert f"`segmentation_training.{key}`" in message and "model is clip_decoder" in message


@pytest.mark.parametrize("change", [{"epochs": 3}, {"blocks": [12]}, {"aff_weight": 0.0}, {"image_size": 320}])
def test_a_clip_decoder_setting_changed_while_the_resunet_trains_is_an_error_naming_it(change):
    key = next(iter(change))
    message = _error({"segmentation_training": {"clip_decoder": change}})
    assert f"`segmentation_training.clip_decoder.{key}`" in message and "model is resunet" in message


def test_alps_pretraining_with_the_clip_decoder_is_an_error():
    message = _error({"segmentation_training": {"model": "clip_decoder", "pretrain": "alps"}})
    assert "parameter `segmentation_training.pretrain` is alps, which pre-trains the ResUNet only" in message


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"decoder_heads": 7}, "segmentation_training.clip_decoder.decoder_dim` (256) must be divisible"),
        ({"blocks": [1, 1]}, "segmentation_training.clip_decoder.blocks"),
        ({"blocks": [0]}, "segmentation_training.clip_decoder.blocks"),
        ({"blocks": "last"}, "segmentation_training.clip_decoder.blocks"),
        ({"seg_weight": 0.0}, "segmentation_training.clip_decoder.seg_weight"),
        ({"feature_cache_dtype": "int8"}, "segmentation_training.clip_decoder.feature_cache_dtype"),
    ],
)
def test_bad_clip_decoder_settings_are_named(change, named):
    assert named in _error({"segmentation_training": {"model": "clip_decoder", "clip_decoder": change}})


def test_the_clip_decoder_without_a_clip_checkpoint_is_an_error_naming_it():
    message = _error(CLIP)
    assert "parameter `text_prototype_kb.clip.checkpoint` must be set when segmentation_training.model is clip_decoder" \
        in message
    validate_parameters(_params({**CLIP, "text_prototype_kb": {"clip": {"checkpoint": "clip.pt"}}}))


def test_a_missing_clip_file_is_named_before_the_run(tmp_path):
    params = _params({**CLIP, "text_prototype_kb": {"clip": {"checkpoint": str(tmp_path / "absent.pt")}}})
    with pytest.raises(UserInputError, match="text_prototype_kb.clip.checkpoint"):
        check_run_inputs(params, {"params:segmentation_training"})
    check_run_inputs(_params(), {"params:segmentation_training"})  # the ResUNet reads no CLIP


def test_the_clip_decoder_is_not_held_to_the_resunets_size_rule():
    # a 120-px tile cannot be halved 4 times, which only the ResUNet needs
    runtime = {"data": {"tile_size": 120}, "segmentation_training": {"model": "clip_decoder"},
               "text_prototype_kb": {"clip": {"checkpoint": "clip.pt"}}}
    validate_parameters(_params(runtime))  # the shipped crop_size (128) is unread by the clip_decoder
    assert "data.tile_size` (120)" in _error({**runtime, "segmentation_training": {"crop_size": None}})
