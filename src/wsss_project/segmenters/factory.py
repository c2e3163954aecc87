"""Choose and build the run's segmenter from the ``sam_labeling`` parameters: a promptable segmenter
(SAM, GrabCut) or, for ``segmenter: regions``, a region source (superpixels, SAM's automatic masks)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .base import PromptableSegmenter
from .regions import SAM_AUTO

if TYPE_CHECKING:
    import torch

    from .regions import RegionSource

logger = logging.getLogger(__name__)

AUTO, SAM, GRABCUT, REGIONS = "auto", "sam", "grabcut", "regions"
SEGMENTERS = (AUTO, SAM, GRABCUT, REGIONS)
WORKERS_AUTO = AUTO  # sam_labeling.workers: auto = every core for weight-free labellers, 1 for SAM
SECTION = "sam_labeling"


def _section(params: Mapping[str, Any], key: str) -> Any:
    try:
        return params[key]
    except KeyError as err:
        raise KeyError(f"missing parameter `sam_labeling.{key}`") from err


def resolve_segmenter_name(params: Mapping[str, Any]) -> str:
    """The segmenter a run labels with: ``sam_labeling.segmenter``, ``auto`` resolved.

    The one place of the rule: ``auto`` means ``sam`` when ``sam_labeling.sam.checkpoint`` is
    set (not null), else the weight-free ``grabcut``. Any other name is returned as given
    (:func:`build_segmenter` checks it). Pure: no logging, no file access, so run tags and
    segmenter caches can ask it too.
    """
    choice = _section(params, "segmenter")
    if choice != AUTO:
        return choice
    return GRABCUT if (params.get("sam") or {}).get("checkpoint") is None else SAM


def uses_sam(params: Mapping[str, Any]) -> bool:
    """Whether the run loads SAM: ``segmenter`` resolves to ``sam``, or is ``regions`` with
    ``regions.source: sam_auto``. Pure, like :func:`resolve_segmenter_name`."""
    resolved = resolve_segmenter_name(params)
    return resolved == SAM or (resolved == REGIONS and _section(params, "regions")["source"] == SAM_AUTO)


def labelling_workers(params: Mapping[str, Any]) -> int:
    """How many tiles are labelled at once (``sam_labeling.workers``, ``auto`` resolved).

    ``auto``: every CPU core this process may use for the weight-free labellers (GrabCut and
    superpixels spend their time in OpenCV / scikit-image code that releases the GIL, so threads
    run them in parallel); 1 for SAM, whose forward pass already uses every core through torch.
    Pure, like :func:`resolve_segmenter_name`.
    """
    workers = _section(params, "workers")
    if workers != WORKERS_AUTO:
        return int(workers)
    if uses_sam(params):
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def build_segmenter(params: dict[str, Any], device: torch.device | str) -> PromptableSegmenter | RegionSource:
    """Build the segmenter named by ``params["segmenter"]`` (auto | sam | grabcut | regions).

    Args:
        params: the ``sam_labeling`` parameters: ``segmenter``, ``sam`` (``checkpoint``,
            ``model_type``, ``multimask_output``: auto | true | false), ``grabcut`` (see
            :class:`~wsss_project.segmenters.grabcut.GrabCutSegmenter`) and ``regions`` (see
            :func:`~wsss_project.segmenters.regions.build_region_source`).
        device: a torch.device or a ``device`` parameter (auto | cpu | cuda | cuda:N).

    ``auto`` means ``sam`` when ``sam.checkpoint`` is set, else the weight-free ``grabcut``
    (announced with a warning). A configured checkpoint that does not exist is an error, never a
    silent fallback. ``regions`` gives a :class:`~wsss_project.segmenters.regions.RegionSource`,
    which takes no prompts (labelled by region voting, segmenters/region_voting.py); its
    ``sam_auto`` source loads SAM from ``sam.checkpoint`` as ``sam`` does.
    """
    # Imported here, like each backend (the schema imports torch): the schema's choices are SEGMENTERS.
    from wsss_project.validation.schema import check_section

    choice = _section(params, "segmenter")
    check_section({"segmenter": choice}, SECTION, partial=True)
    resolved = resolve_segmenter_name(params)
    if choice == AUTO and resolved == GRABCUT:
        logger.warning(
            "No SAM checkpoint configured (sam_labeling.sam.checkpoint): "
            "using the weight-free GrabCut stand-in"
        )
    if resolved == GRABCUT:
        from .grabcut import GrabCutSegmenter

        logger.info("Segmenter: GrabCut")
        return GrabCutSegmenter(_section(params, "grabcut"))
    if resolved == REGIONS and not uses_sam(params):
        from .regions import build_region_source

        source = build_region_source(_section(params, "regions"))
        logger.info("Segmenter: regions (%s)", source.source)
        return source

    # imported here, like each backend: choosing a segmenter (run tags at startup) needs no torch
    import torch

    from wsss_project.foundation.sam import load_sam
    from wsss_project.utils.device import resolve_device

    from .sam import SamSegmenter, parse_multimask_output

    sam_params = _section(params, "sam")
    for key in ("checkpoint", "model_type", "stability_score_offset", "multimask_output"):
        if key not in sam_params:
            raise KeyError(f"missing parameter `sam_labeling.sam.{key}`")
    # Checked before loading the checkpoint, so a typo fails in seconds, not after a model load.
    parse_multimask_output(sam_params["multimask_output"])
    if resolved == REGIONS:
        check_section(_section(params, "regions"), f"{SECTION}.regions")
    if not isinstance(device, torch.device):
        device = resolve_device(device)
    model = load_sam(sam_params["model_type"], sam_params["checkpoint"], device)
    if resolved == REGIONS:
        from .regions import build_region_source

        logger.info("Segmenter: regions (SAM %s automatic masks on %s)", sam_params["model_type"], device)
        return build_region_source(_section(params, "regions"), model.to(device))
    logger.info("Segmenter: SAM %s on %s", sam_params["model_type"], device)
    return SamSegmenter(model, device, sam_params)
