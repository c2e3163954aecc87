"""Every registered pipeline runs with the SequentialRunner: one tiny default run, then each
pipeline on its own from that run's outputs, each saving every dataset its nodes declare and
logging an MLflow run named after it; then notebooks/explore_run.ipynb reads those runs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mlflow
import pytest
from kedro.framework.hooks import hook_impl
from kedro.framework.project import pipelines
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import MemoryDataset
from kedro.runner import SequentialRunner
from kedro_mlflow.io.metrics import MlflowMetricsHistoryDataset
from test_run import TINY_PARAMS
from tiny_foundation import write_tiny_clip

import wsss_project
from wsss_project.hooks import RESOLVED_PARAMS
from wsss_project.pipeline_registry import register_pipelines

pytestmark = pytest.mark.slow  # about 90 s on 2 CPU cores: eleven KedroSession runs

# One GrabCut iteration: the sweep labels the train tiles 16 times.
REGISTRY_PARAMS = {**TINY_PARAMS, "sam_labeling": {"grabcut": {"iterations": 1}}}
PIPELINE_NAMES = list(register_pipelines())
NEEDS_CLIP = "text_prototype_kb"  # stops before any node without a CLIP checkpoint: given a tiny random one


class SavedDatasets:
    """A Kedro hook that records the name of every dataset a run saves."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    @hook_impl
    def after_dataset_saved(self, dataset_name: str) -> None:
        self.names.add(dataset_name)


def _runtime_params(project, pipeline_name: str) -> dict:
    if pipeline_name != NEEDS_CLIP:
        return REGISTRY_PARAMS
    config, checkpoint = write_tiny_clip(project / "tiny_clip")
    return {**REGISTRY_PARAMS, "text_prototype_kb": {"clip": {"model_name": str(config), "checkpoint": str(checkpoint)}}}


def _run(project, pipeline_name: str) -> tuple[set[str], str]:
    """(names of the datasets saved, session id) of one `kedro run --pipeline <name>`."""
    saved = SavedDatasets()
    with KedroSession.create(project_path=project, runtime_params=_runtime_params(project, pipeline_name)) as session:
        session._hook_manager.register(saved)  # Kedro has no public way to add a hook to one session
        session.run(pipeline_names=[pipeline_name], runner=SequentialRunner())
        return saved.names, session.session_id


@pytest.fixture(scope="module")
def default_run(module_project_copy) -> tuple[set[str], str]:
    """The tiny default run every other pipeline starts from."""
    bootstrap_project(module_project_copy)
    return _run(module_project_copy, "__default__")


@pytest.mark.parametrize("pipeline_name", PIPELINE_NAMES)
def test_each_registered_pipeline_runs_on_its_own_and_saves_its_outputs(module_project_copy, default_run, pipeline_name):
    saved, session_id = default_run if pipeline_name == "__default__" else _run(module_project_copy, pipeline_name)
    pipeline = pipelines[pipeline_name]
    assert pipeline.nodes
    assert saved == pipeline.all_outputs(), f"{pipeline_name} did not save {sorted(pipeline.all_outputs() - saved)}"

    # What it persisted is on disk, read back by a fresh catalog.
    with KedroSession.create(project_path=module_project_copy, runtime_params=REGISTRY_PARAMS) as session:
        catalog = session.load_context().catalog
        datasets = {name: catalog.get(name, fallback_to_runtime_pattern=True) for name in saved}
        persisted = sorted(
            name for name, dataset in datasets.items()
            if not isinstance(dataset, MemoryDataset | MlflowMetricsHistoryDataset)
        )
        assert [name for name in persisted if not catalog.exists(name)] == []

    # Its own MLflow run (ended with its session) is named after it, with T resolved where it
    # uses T, and tagged with plain strings.
    mlflow.set_tracking_uri(f"sqlite:///{module_project_copy / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["wsss_project"], filter_string=f"tags.run_id = '{session_id}'")
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["status"] == "FINISHED"
    uses_threshold = RESOLVED_PARAMS in pipeline.datasets()
    resolved = json.loads((module_project_copy / "data" / "03_primary" / f"{RESOLVED_PARAMS}.json").read_text())
    threshold = f"auto->{resolved['threshold']}" if uses_threshold else "auto"
    assert run["tags.mlflow.runName"] == f"{pipeline_name} | synthetic | grabcut | T={threshold}"
    assert (run["tags.runner"], run["tags.pipeline"]) == ("SequentialRunner", pipeline_name)
    metric_outputs = [name for name, dataset in datasets.items() if isinstance(dataset, MlflowMetricsHistoryDataset)]
    logged = [key for key in run.index if key.startswith("metrics.") and run[key] == run[key]]  # not NaN
    assert bool(metric_outputs) == bool(logged), f"{pipeline_name}: MLflow metric outputs {metric_outputs}, logged {logged}"


def test_the_explore_notebook_runs_headless_from_notebooks_and_reads_the_project_runs(module_project_copy, default_run):
    nbformat = pytest.importorskip("nbformat", reason="Jupyter comes with the dev extras")
    nbclient = pytest.importorskip("nbclient", reason="Jupyter comes with the dev extras")
    notebooks = module_project_copy / "notebooks"
    notebooks.mkdir(exist_ok=True)
    shutil.copy(Path(__file__).resolve().parents[1] / "notebooks" / "explore_run.ipynb", notebooks)
    notebook = nbformat.read(notebooks / "explore_run.ipynb", as_version=4)
    # The kernel imports the wsss_project under test, wherever this process found it.
    package_parent = str(Path(wsss_project.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))}
    client = nbclient.NotebookClient(notebook, kernel_name="python3", resources={"metadata": {"path": str(notebooks)}})
    client.execute(env=env)

    assert not (notebooks / "mlflow.db").exists(), "the notebook opened a new MLflow database beside itself"
    outputs = "".join(
        "".join(output.get("text", "")) + "".join(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    assert f"MLflow runs in {module_project_copy.resolve() / 'mlflow.db'}" in outputs
    assert "__default__ | synthetic | grabcut" in outputs  # the runs table
