"""The catalog against every registered pipeline: every dataset declared (no implicit
MemoryDataset) and Kedro-Viz layers in the order of Kedro's data engineering convention."""

from __future__ import annotations

import json
from collections import defaultdict

import fsspec
import pytest
from kedro.framework.project import pipelines
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro_viz.api.rest.responses.save_responses import save_api_pipeline_response_to_fs
from kedro_viz.data_access import data_access_manager
from kedro_viz.server import populate_data

from wsss_project.pipeline_registry import register_pipelines

# Kedro's data engineering convention, in order.
LAYER_ORDER = ("raw", "intermediate", "primary", "feature", "model_input", "models", "model_output", "reporting")


@pytest.fixture(scope="module")
def project(module_project_copy):
    """(catalog, registered pipelines) of a project copy, as `kedro run` and Kedro-Viz see them."""
    bootstrap_project(module_project_copy)
    with KedroSession.create(project_path=module_project_copy) as session:
        yield session.load_context().catalog, dict(pipelines)


@pytest.fixture(scope="module")
def viz_build(project, tmp_path_factory) -> dict[str, dict]:
    """The pipeline JSON that `kedro viz build` writes (api/pipelines/<name>), per pipeline, and
    Kedro-Viz's dataset -> layer mapping under the key "layers_mapping"."""
    catalog, registered = project
    data_access_manager.reset_fields()
    try:
        populate_data(data_access_manager, catalog, registered, {})
        folder = tmp_path_factory.mktemp("viz_build")
        save_api_pipeline_response_to_fs(str(folder), fsspec.filesystem("file"))
        built = {name: json.loads((folder / name).read_text()) for name in registered}
        built["layers_mapping"] = dict(data_access_manager.catalog.layers_mapping)
    finally:
        data_access_manager.reset_fields()  # Kedro-Viz keeps its graph in a module global
    return built


PIPELINE_NAMES = list(register_pipelines())


def test_the_catalog_has_no_catch_all_pattern(project):
    catalog, _ = project
    assert "surely_not_a_dataset_of_this_project" not in catalog, "a catch-all pattern would hide undeclared datasets"


@pytest.mark.parametrize("pipeline_name", PIPELINE_NAMES)
def test_every_dataset_is_declared_or_matched_by_a_factory(project, pipeline_name):
    catalog, registered = project
    undeclared = sorted(name for name in registered[pipeline_name].datasets() if name not in catalog)
    assert not undeclared, f"{pipeline_name} uses datasets the catalog does not declare: {undeclared}"


@pytest.mark.parametrize("pipeline_name", PIPELINE_NAMES)
def test_kedro_viz_shows_layers_on_every_pipeline(viz_build, pipeline_name):
    # Kedro-Viz sorts layers topologically and shows none (an empty list) on a cycle.
    layers = viz_build[pipeline_name]["layers"]
    assert layers, f"Kedro-Viz finds a layer cycle on {pipeline_name}"
    assert set(layers) <= set(LAYER_ORDER)


def test_the_default_pipeline_shows_the_layers_in_convention_order(viz_build):
    layers = viz_build["__default__"]["layers"]
    assert layers == [layer for layer in LAYER_ORDER if layer in layers]
    assert {"intermediate", "primary", "models", "model_output", "reporting"} <= set(layers)


def _layered_descendants(pipeline, start: str, layers: dict[str, str]) -> set[str]:
    """The nearest layered datasets computed from `start`, through unlayered ones (MemoryDatasets)."""
    outputs_of = defaultdict(set)  # dataset -> datasets computed directly from it
    for node in pipeline.nodes:
        for dataset in node.inputs:
            outputs_of[dataset].update(node.outputs)
    found, stack, seen = set(), [start], {start}
    while stack:
        for output in outputs_of[stack.pop()] - seen:
            seen.add(output)
            if output in layers:
                found.add(output)
            else:
                stack.append(output)
    return found


@pytest.mark.parametrize("pipeline_name", PIPELINE_NAMES)
def test_no_dataset_is_in_a_later_layer_than_a_dataset_computed_from_it(project, viz_build, pipeline_name):
    _, registered = project
    pipeline, layers = registered[pipeline_name], viz_build["layers_mapping"]
    rank = {layer: k for k, layer in enumerate(LAYER_ORDER)}
    unknown = {name: layer for name, layer in layers.items() if layer not in rank}
    assert not unknown, f"layers outside Kedro's convention {LAYER_ORDER}: {unknown}"
    backwards = [
        f"{source} ({layers[source]}) -> {target} ({layers[target]})"
        for source in sorted(pipeline.datasets() & layers.keys())
        for target in sorted(_layered_descendants(pipeline, source, layers))
        if rank[layers[target]] < rank[layers[source]]
    ]
    assert not backwards, f"datasets computed from a later layer in {pipeline_name}: {backwards}"
