"""The MLflow run name and tags the project hook writes (the run itself: tests/test_pipeline_registry.py)."""

from __future__ import annotations

import json

from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.runner import SequentialRunner, ThreadRunner

from wsss_project.hooks import (
    dataset_label,
    pipeline_label,
    plain_run_param_tags,
    run_name,
    runner_name,
)


def test_runner_tag_is_the_class_name_not_an_object_repr():
    # KedroSession records `str(runner)`, or "None" when it runs its default SequentialRunner.
    assert runner_name(str(ThreadRunner())) == "ThreadRunner"
    assert runner_name(str(SequentialRunner())) == "SequentialRunner"
    assert runner_name("None") == "SequentialRunner"


def test_run_param_tags_are_plain_strings():
    run_params = {
        "runner": str(SequentialRunner()), "pipeline_names": ["evaluation", "threshold_sweep"],
        "runtime_params": {"data": {"tile_size": 128}}, "env": "local", "tags": None, "node_names": [],
    }
    tags = plain_run_param_tags(run_params)
    assert tags == {
        "runner": "SequentialRunner", "pipeline_names": "evaluation,threshold_sweep",
        "runtime_params": '{"data": {"tile_size": 128}}', "env": "local",
    }
    assert json.loads(tags["runtime_params"]) == run_params["runtime_params"]


def test_dataset_label_names_the_folder_holding_images_and_masks():
    folder = {"images_dir": "/data/landslide_real/images", "masks_dir": "/data/landslide_real/masks"}
    assert dataset_label({"source": "folder", "folder": folder}) == "folder:landslide_real"
    assert dataset_label({"source": "folder", "folder": {**folder, "masks_dir": None}}) == "folder:images"
    assert dataset_label({"source": "synthetic", "folder": folder}) == "synthetic"


def test_pipeline_label_joins_the_run_pipelines_as_kedro_mlflow_does():
    assert pipeline_label({"pipeline_names": None}) == "__default__"
    assert pipeline_label({"pipeline_names": ["evaluation", "threshold_sweep"]}) == "evaluation+threshold_sweep"


def test_run_name_says_pipeline_dataset_segmenter_and_t_once_resolved():
    tags = {"pipeline": "__default__", "dataset": "folder:landslide_real", "segmenter": "grabcut", "threshold": "auto"}
    assert run_name(tags) == "__default__ | folder:landslide_real | grabcut | T=auto"
    assert run_name({**tags, "threshold_resolved": "97"}) == "__default__ | folder:landslide_real | grabcut | T=auto->97"
    assert run_name({**tags, "threshold": "120", "threshold_resolved": "120"}).endswith("| T=120")


def test_kedro_mlflow_tracks_into_the_project_database_from_any_folder(project_copy, monkeypatch):
    notebooks = project_copy / "notebooks"
    notebooks.mkdir()
    monkeypatch.chdir(notebooks)  # as a notebook kernel started in notebooks/
    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy) as session:
        context = session.load_context()  # kedro-mlflow connects and creates its experiment here
    assert context.mlflow.server.mlflow_tracking_uri == f"sqlite:///{project_copy.resolve()}/mlflow.db"
    assert (project_copy / "mlflow.db").is_file() and not (notebooks / "mlflow.db").exists()


def test_a_regions_run_has_no_prompt_mode_tag():
    from wsss_project.hooks import NO_PROMPTS, run_tags

    labeling = {"segmenter": "regions", "prompt_mode": "point_box", "sam": {"checkpoint": None}}
    tags = run_tags({"sam_labeling": labeling}, None)
    assert (tags["segmenter"], tags["prompt_mode"]) == ("regions", NO_PROMPTS)
    assert run_tags({"sam_labeling": {**labeling, "segmenter": "grabcut"}}, None)["prompt_mode"] == "point_box"
