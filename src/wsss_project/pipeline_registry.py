"""Project pipelines."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from wsss_project.pipelines import data_preparation


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines; `__default__` runs data preparation through evaluation."""
    pipelines = {"data_preparation": data_preparation.create_pipeline()}
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
