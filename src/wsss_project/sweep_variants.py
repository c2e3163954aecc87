"""The variant pipelines declared in `settings.SWEEP_VARIANTS`: their values (checked), their
namespaces, and the parameters of each namespace.

Kedro builds pipelines before it reads configuration, so which namespaces exist is a project
setting, as large Kedro projects declare theirs (`DYNAMIC_PIPELINES_MAPPING`):
`threshold_sweep` lists the prompt thresholds T (APSAM Fig. 5), `prompt_ablation` the SAM prompt
modes (APSAM Table II). The pipelines (pipelines/threshold_sweep) and the parameters both read the
list from here, so they always agree.

Each namespace reads Kedro's namespaced parameters: `params:threshold_sweep.t050.prompt_generation`
(the run's `prompt_generation` with T = 50) and `params:prompt_ablation.box.sam_labeling` (the run's
`sam_labeling` with prompt mode `box`). `SweepConfigLoader` adds them after every environment and
`--params` override is merged, so an override in conf/local reaches every namespace; a resolver in
a conf/base file could not see it (Kedro resolves each environment before merging them).

The pseudo-label comparison is declared the same way, in `settings.COMPARISON_VARIANTS`: variant name
-> overrides of the run's `sam_labeling` (None = CAM > T, no segmenter). Its namespaces read
`params:pseudo_label_comparison.<variant>.{variant, sam_labeling, skipped}`. A variant that needs SAM
(`factory.uses_sam`) while `sam_labeling.sam.checkpoint` is null stays in the pipeline (Kedro's
pipelines are static: they exist before the parameters do) with `sam_labeling: null` and `skipped`
naming the parameter that enables it; its node then writes a `skipped` row instead of failing.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from kedro.config import OmegaConfigLoader

from wsss_project.contracts import PROMPT_MODES
from wsss_project.errors import UserInputError
from wsss_project.geometry.thresholds import N_LEVELS
from wsss_project.segmenters.factory import uses_sam

SETTING = "SWEEP_VARIANTS"
THRESHOLD_SWEEP = "threshold_sweep"
PROMPT_ABLATION = "prompt_ablation"
COMPARISON_SETTING = "COMPARISON_VARIANTS"
PSEUDO_LABEL_COMPARISON = "pseudo_label_comparison"
NAMESPACE_SEPARATOR = "."
SKIPPED_WITHOUT_CHECKPOINT = (
    "needs SAM: set parameter `sam_labeling.sam.checkpoint` (a local checkpoint file) to run this variant"
)
# The parameter section each sweep's namespaces vary, and the key they replace in it.
VARIED = {THRESHOLD_SWEEP: ("prompt_generation", "threshold"), PROMPT_ABLATION: ("sam_labeling", "prompt_mode")}


def _setting_name(sweep: str) -> str:
    return f"{SETTING}[{sweep!r}] in src/wsss_project/settings.py"


def _declared(sweep: str) -> tuple:
    """The values of one sweep as declared in settings: a non-empty list without repeats."""
    from wsss_project import settings  # at call time: settings imports this module

    variants = getattr(settings, SETTING, None)
    if not isinstance(variants, dict) or sweep not in variants:
        raise UserInputError(f"{_setting_name(sweep)} is missing: declare the values of {sweep!r} there")
    values = variants[sweep]
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise UserInputError(f"{_setting_name(sweep)} must be a non-empty list, got {values!r}")
    repeated = sorted({str(v) for v in values if list(values).count(v) > 1})
    if repeated:
        raise UserInputError(f"{_setting_name(sweep)} lists {repeated} more than once")
    return tuple(values)


def sweep_thresholds() -> tuple[int, ...]:
    """The prompt thresholds T of the threshold sweep, integers on the 0..255 heatmap."""
    values = _declared(THRESHOLD_SWEEP)
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < N_LEVELS]
    if bad:
        raise UserInputError(f"{_setting_name(THRESHOLD_SWEEP)} must list integers in 0..{N_LEVELS - 1}, got {bad}")
    return values


def ablation_modes() -> tuple[str, ...]:
    """The prompt modes of the prompt ablation."""
    values = _declared(PROMPT_ABLATION)
    bad = [v for v in values if v not in PROMPT_MODES]
    if bad:
        raise UserInputError(f"{_setting_name(PROMPT_ABLATION)} must list prompt modes of {list(PROMPT_MODES)}, got {bad}")
    return values


def threshold_variant(threshold: int) -> str:
    """The variant name of one T, zero-padded so that names sort by T: `t050`."""
    return f"t{threshold:03d}"


def threshold_namespaces() -> list[str]:
    """One namespace per declared T: `threshold_sweep.t050`, ..."""
    return [f"{THRESHOLD_SWEEP}.{threshold_variant(t)}" for t in sweep_thresholds()]


def ablation_namespaces() -> list[str]:
    """One namespace per declared prompt mode: `prompt_ablation.point_box`, ..."""
    return [f"{PROMPT_ABLATION}.{mode}" for mode in ablation_modes()]


def _variants(sweep: str) -> dict[str, Any]:
    """Variant name -> the value it sets, for one sweep."""
    if sweep == THRESHOLD_SWEEP:
        return {threshold_variant(t): t for t in sweep_thresholds()}
    return {mode: mode for mode in ablation_modes()}


def sweep_parameters(parameters: dict[str, Any]) -> dict[str, dict]:
    """The parameters of every variant namespace, made from the project's merged parameters.

    `threshold_sweep.<variant>.prompt_generation` is `prompt_generation` with that T;
    `prompt_ablation.<mode>.sam_labeling` is `sam_labeling` with that prompt mode.
    """
    result = {}
    for sweep, (section, key) in VARIED.items():
        if section not in parameters:
            raise KeyError(f"missing parameter `{section}`: the {sweep} namespaces are made from it")
        result[sweep] = {
            variant: {section: {**copy.deepcopy(parameters[section]), key: value}}
            for variant, value in _variants(sweep).items()
        }
    return result


def _comparison_setting_name() -> str:
    return f"{COMPARISON_SETTING} in src/wsss_project/settings.py"


def comparison_variants() -> dict[str, dict | None]:
    """The pseudo-labellers of the comparison, as declared: name -> `sam_labeling` overrides, or None
    for CAM > T (no segmenter). Names become namespaces, so they are plain words without dots."""
    from wsss_project import settings  # at call time: settings imports this module

    variants = getattr(settings, COMPARISON_SETTING, None)
    if not isinstance(variants, Mapping) or not variants:
        raise UserInputError(f"{_comparison_setting_name()} must be a non-empty mapping: variant name -> "
                             "overrides of `sam_labeling`, or None for CAM > T")
    bad_names = [name for name in variants if not isinstance(name, str) or not name.isidentifier()]
    bad_values = [name for name, value in variants.items() if value is not None and not isinstance(value, Mapping)]
    if bad_names or bad_values:
        raise UserInputError(f"{_comparison_setting_name()}: variant names must be identifiers (got {bad_names}) "
                             f"and each value a mapping of `sam_labeling` overrides or None (not so for {bad_values})")
    return {name: None if value is None else copy.deepcopy(dict(value)) for name, value in variants.items()}


def comparison_namespaces() -> list[str]:
    """One namespace per declared labeller: `pseudo_label_comparison.cam_threshold`, ..."""
    return [f"{PSEUDO_LABEL_COMPARISON}{NAMESPACE_SEPARATOR}{name}" for name in comparison_variants()]


def merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of `base` with `overrides` merged in key by key, nested mappings too (as --params merges)."""
    result = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        nested = isinstance(value, Mapping) and isinstance(result.get(key), Mapping)
        result[key] = merged(result[key], value) if nested else copy.deepcopy(value)
    return result


def comparison_parameters(parameters: dict[str, Any]) -> dict[str, dict]:
    """`pseudo_label_comparison.<variant>` for every declared labeller: its name, its `sam_labeling`
    (the run's with the variant's overrides; null for CAM > T and for a skipped variant) and `skipped`
    (null, or why the variant does not run: a SAM variant without `sam_labeling.sam.checkpoint`)."""
    if "sam_labeling" not in parameters:
        raise KeyError(f"missing parameter `sam_labeling`: the {PSEUDO_LABEL_COMPARISON} namespaces are made from it")
    result = {}
    for name, overrides in comparison_variants().items():
        section = None if overrides is None else merged(parameters["sam_labeling"], overrides)
        skipped = None
        if section is not None and uses_sam(section) and section["sam"]["checkpoint"] is None:
            section, skipped = None, SKIPPED_WITHOUT_CHECKPOINT
        elif section is not None and not uses_sam(section):
            # A weight-free labeller does not read the run's checkpoint: without it here, the schema's
            # "checkpoint not used" warning stays about the run's own segmenter.
            section["sam"]["checkpoint"] = None
        result[name] = {"variant": name, "sam_labeling": section, "skipped": skipped}
    return result


class SweepConfigLoader(OmegaConfigLoader):
    """OmegaConfigLoader whose parameters also hold each variant namespace's parameters.

    They are made from the final parameters (every environment and `--params` merged); setting
    them directly would be silently overwritten, so it is an error that names the setting to change.
    """

    def __getitem__(self, key: str) -> dict[str, Any]:
        config = super().__getitem__(key)
        if key != "parameters":
            return config
        variants = sweep_parameters(config)
        variants[PSEUDO_LABEL_COMPARISON] = comparison_parameters(config)
        made_from = {**{sweep: (VARIED[sweep][0], _setting_name(sweep)) for sweep in VARIED},
                     PSEUDO_LABEL_COMPARISON: ("sam_labeling", _comparison_setting_name())}
        for sweep, made in variants.items():
            if sweep in config and config[sweep] != made:
                section, setting = made_from[sweep]
                raise UserInputError(
                    f"parameter `{sweep}` cannot be set: its namespaces are made from "
                    f"`{section}` and {setting}; change those instead"
                )
        return {**config, **variants}
