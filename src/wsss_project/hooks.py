"""Project hooks: only what kedro-mlflow does not already give — run tags for comparing runs."""

from __future__ import annotations

import logging
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl

from wsss_project.segmenters.factory import resolve_segmenter_name

logger = logging.getLogger(__name__)


def run_tags(params: dict[str, Any], pipeline_name: str | None) -> dict[str, str]:
    """Tags that make runs comparable in the MLflow UI: dataset, segmenter, T, prompt mode."""
    data = params.get("data", {})
    labeling = params.get("sam_labeling", {})
    segmenter = labeling.get("segmenter", "")
    if segmenter == "auto":
        segmenter = resolve_segmenter_name(labeling)
    dataset = data.get("source", "")
    if dataset == "folder":
        dataset = str((data.get("folder") or {}).get("images_dir"))
    return {
        "dataset": dataset,
        "segmenter": segmenter,
        "threshold": str(params.get("prompt_generation", {}).get("threshold", "")),
        "prompt_mode": str(labeling.get("prompt_mode", "")),
        "pipeline": pipeline_name or "__default__",
    }


class MlflowRunTagsHook:
    """Tags the MLflow run that kedro-mlflow opened for this `kedro run`."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        if mlflow.active_run() is None:
            return
        params = catalog.load("parameters")
        mlflow.set_tags(run_tags(params, run_params.get("pipeline_name")))
