"""Project hooks: only what kedro-mlflow does not already give — its database found from any folder,
and a run name and tags for comparing runs."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import mlflow
from kedro.config import MissingConfigException
from kedro.framework.hooks import hook_impl
from kedro.pipeline import Pipeline
from kedro.pipeline.node import Node
from kedro.runner import SequentialRunner

from wsss_project.pipelines.prompt_generation.nodes import AUTO
from wsss_project.segmenters.factory import REGIONS, resolve_segmenter_name
from wsss_project.tracking import MLFLOW_CONFIG_PATTERNS, project_sqlite_uri

logger = logging.getLogger(__name__)

RUN_NAME_TAG = "mlflow.runName"  # MLflow's reserved tag: setting it renames the run
RESOLVED_PARAMS = "prompt_generation_resolved"  # the run's prompt_generation with a numeric T
RESOLVE_NODE = "resolve_prompt_generation"  # the node that writes it
DEFAULT_PIPELINE = "__default__"
NO_PROMPTS = "none"  # the prompt_mode tag of a run whose segmenter takes no prompts (regions)
# KedroSession records its runner as str(runner): an object repr such as
# "<kedro.runner.sequential_runner.SequentialRunner object at 0x7f...>".
RUNNER_REPR = re.compile(r"<(?:[\w.]+\.)?(\w+) object at 0x[0-9a-fA-F]+>")


def dataset_label(data: dict[str, Any]) -> str:
    """`synthetic`, or `folder:<name>`: the folder holding images_dir and masks_dir
    (landslide_real for landslide_real/images + landslide_real/masks), else images_dir's own name."""
    source = str(data.get("source", ""))
    images_dir = (data.get("folder") or {}).get("images_dir")
    if source != "folder" or images_dir is None:
        return source
    images = Path(images_dir).absolute()
    masks_dir = (data.get("folder") or {}).get("masks_dir")
    folder = Path(os.path.commonpath([images, Path(masks_dir).absolute()])) if masks_dir else images
    return f"{source}:{(folder if folder.name else images).name}"


def pipeline_label(run_params: dict[str, Any]) -> str:
    """The pipelines of this run joined by '+', as kedro-mlflow names them (`__default__` when none)."""
    names = run_params.get("pipeline_names") or run_params.get("pipeline_name") or [DEFAULT_PIPELINE]
    return names if isinstance(names, str) else "+".join(names)


def run_tags(params: dict[str, Any], pipeline_name: str | None) -> dict[str, str]:
    """Tags that make runs comparable in the MLflow UI: dataset, segmenter, T, prompt mode."""
    data = params.get("data", {})
    labeling = params.get("sam_labeling", {})
    segmenter = labeling.get("segmenter", "")
    if segmenter == "auto":
        segmenter = resolve_segmenter_name(labeling)
    return {
        "dataset": dataset_label(data),
        "segmenter": segmenter,
        "threshold": str(params.get("prompt_generation", {}).get("threshold", "")),
        # segmenter regions takes no prompts: its runs must not look like a prompt mode's
        "prompt_mode": NO_PROMPTS if segmenter == REGIONS else str(labeling.get("prompt_mode", "")),
        "pipeline": pipeline_name or DEFAULT_PIPELINE,
    }


def run_name(tags: dict[str, str]) -> str:
    """`<pipeline> | <dataset> | <segmenter> | T=<threshold>`, with `auto->97` once T is resolved."""
    threshold = tags.get("threshold", "")
    resolved = tags.get("threshold_resolved")
    if threshold == AUTO and resolved:
        threshold = f"{AUTO}->{resolved}"
    return " | ".join((tags.get("pipeline", DEFAULT_PIPELINE), tags.get("dataset", ""),
                       tags.get("segmenter", ""), f"T={threshold}"))


def runner_name(recorded: str) -> str:
    """The runner's class name from KedroSession's record of it (an object repr, or "None" when
    the session ran its default SequentialRunner)."""
    if recorded in ("", "None"):
        return SequentialRunner.__name__
    match = RUNNER_REPR.fullmatch(recorded)
    return match.group(1) if match else recorded


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, list | tuple | set):
        return ",".join(str(item) for item in value)
    return str(value)


def plain_run_param_tags(run_params: dict[str, Any]) -> dict[str, str]:
    """kedro-mlflow tags the run with every non-empty run parameter as str(value) (the runner's
    object repr, Python reprs of lists and dicts); the same tags as plain strings: the runner's
    class name, lists joined by ',', dicts as JSON."""
    tags = {key: _plain(value) for key, value in run_params.items() if value}
    if "runner" in run_params:
        tags["runner"] = runner_name(str(run_params["runner"]))
    return tags


def _resolved_threshold(pipeline: Pipeline, catalog) -> int | None:
    """T of the stored `prompt_generation_resolved` when this run reads it without resolving it."""
    if RESOLVED_PARAMS not in pipeline.inputs() or not catalog.exists(RESOLVED_PARAMS):
        return None
    return int(catalog.load(RESOLVED_PARAMS)["threshold"])


class MlflowTrackingUriHook:
    """Hands kedro-mlflow the project's SQLite tracking URI as an absolute path (see
    wsss_project.tracking): the runs go to <project>/mlflow.db whatever the current folder."""

    @hook_impl(tryfirst=True)  # before kedro-mlflow reads mlflow.yml
    def after_context_created(self, context) -> None:
        loader = context.config_loader
        loader.config_patterns.setdefault("mlflow", list(MLFLOW_CONFIG_PATTERNS))
        try:
            conf = loader["mlflow"]
        except MissingConfigException:
            return  # kedro-mlflow's defaults: a project-relative ./mlruns
        server = conf.get("server") or {}
        uri = server.get("mlflow_tracking_uri")
        absolute = project_sqlite_uri(uri, context.project_path)
        if absolute != uri:
            loader["mlflow"] = {**conf, "server": {**server, "mlflow_tracking_uri": absolute}}


class MlflowRunTagsHook:
    """Names and tags the MLflow run that kedro-mlflow opened for this `kedro run`.

    Runs after kedro-mlflow's own `before_pipeline_run` (trylast), whose tags it rewrites as plain
    strings. The hook keeps no state: after T is resolved, the name is rebuilt from the run's tags.
    """

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog) -> None:
        if mlflow.active_run() is None:
            return
        params = catalog.load("parameters")
        tags = {**plain_run_param_tags(run_params), **run_tags(params, pipeline_label(run_params))}
        resolved = _resolved_threshold(pipeline, catalog)
        if resolved is not None:
            tags["threshold_resolved"] = str(resolved)
        mlflow.set_tags({**tags, RUN_NAME_TAG: run_name(tags)})

    @hook_impl
    def after_node_run(self, node: Node, outputs: dict[str, Any]) -> None:
        run = mlflow.active_run()
        if node.name != RESOLVE_NODE or run is None or RESOLVED_PARAMS not in outputs:
            return
        tags = {**mlflow.get_run(run.info.run_id).data.tags,
                "threshold_resolved": str(int(outputs[RESOLVED_PARAMS]["threshold"]))}
        mlflow.set_tags({"threshold_resolved": tags["threshold_resolved"], RUN_NAME_TAG: run_name(tags)})
