"""End-to-end: the TINY run with `compute.backend: dask` (a LocalCluster of 2 worker processes, 1
thread each, started and closed by the run) gives the local backend's metrics (to 1e-9) and the
same bytes of cams, pseudo-masks and predictions; each worker builds each model once."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from project_files import copy_project, latest_version
from test_run import TINY_PARAMS

from wsss_project.compute import cluster
from wsss_project.errors import UserInputError

# Inference batches of 4 tiles and tasks of 4: every stage runs as several tasks on both workers.
SMALL_BATCHES = {
    **TINY_PARAMS,
    "localization": {**TINY_PARAMS["localization"], "inference_batch_size": 4},
    "segmentation_training": {**TINY_PARAMS["segmentation_training"], "inference_batch_size": 4},
}
DASK = {"backend": "dask", "n_workers": 2, "threads_per_worker": 1, "tiles_per_task": 4}
OUTPUT_FOLDERS = ("03_primary/cams", "04_feature/pseudo_masks", "07_model_output/predictions",
                  "07_model_output/supervised_predictions")
# localizer, segmenter (GrabCut), the weak ResUNet and the supervised reference's
MODELS_PER_RUN = 4


def _run(project: Path, monkeypatch, params: dict) -> Path:
    project.mkdir(exist_ok=True)
    monkeypatch.chdir(copy_project(project))
    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run()
    return project / "data"


def _files(data: Path) -> dict[str, bytes]:
    return {str(path.relative_to(data)): path.read_bytes()
            for folder in OUTPUT_FOLDERS for path in sorted((data / folder).rglob("*.png"))}


def _numbers(tree, path=()) -> dict[tuple, float]:
    if isinstance(tree, dict):
        return {key: value for k, v in tree.items() for key, value in _numbers(v, (*path, k)).items()}
    return {path: tree} if isinstance(tree, int | float) and not isinstance(tree, bool) else {}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def one_torch_thread():
    """The driver computes with the workers' torch thread count (compute.threads_per_worker): float sums
    are ordered by the thread count, so 2 threads against 1 may differ in the last bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(DASK["threads_per_worker"])
    yield
    torch.set_num_threads(threads)


def test_the_dask_backend_gives_the_local_runs_bytes_and_metrics_loading_each_model_once_per_worker(
    tmp_path, monkeypatch, one_torch_thread,
):
    local = _run(tmp_path / "local", monkeypatch, SMALL_BATCHES)
    records = _Records()
    logger = logging.getLogger(cluster.__name__)  # not configured by conf/logging.yml: keeps this handler
    logger.addHandler(records)
    try:
        dask = _run(tmp_path / "dask", monkeypatch, {**SMALL_BATCHES, "compute": DASK})
    finally:
        logger.removeHandler(records)

    local_files, dask_files = _files(local), _files(dask)
    assert local_files and set(dask_files) == set(local_files)
    assert [name for name in local_files if dask_files[name] != local_files[name]] == []
    metrics = [json.loads(latest_version(data / "08_reporting" / "metrics.json").read_text()) for data in (local, dask)]
    local_numbers, dask_numbers = _numbers(metrics[0]), _numbers(metrics[1])
    assert set(dask_numbers) == set(local_numbers)
    assert all(dask_numbers[key] == pytest.approx(value, abs=1e-9) for key, value in local_numbers.items())
    tables = [pd.read_parquet(latest_version(data / "04_feature" / "pseudo_mask_table.parquet")) for data in (local, dask)]
    pd.testing.assert_frame_equal(tables[1], tables[0])

    # The run started its cluster, then reported what each of its 2 workers built: every model once.
    started = [m for m in records.messages if m.startswith("Dask: LocalCluster started")]
    built = [m for m in records.messages if m.startswith("Dask worker ")]
    assert len(started) == 1 and len(built) == 2
    loads = [(key, int(n)) for message in built for key, n in re.findall(r"(\w{12}) x(\d+)", message)]
    assert {n for _, n in loads} == {1}
    assert len({key for key, _ in loads}) == MODELS_PER_RUN


def test_a_run_whose_scheduler_does_not_answer_stops_naming_compute_scheduler_address(tmp_path, monkeypatch):
    compute = {"backend": "dask", "scheduler_address": "tcp://127.0.0.1:9", "connect_timeout": 1}
    with pytest.raises(UserInputError, match=r"compute\.scheduler_address"):
        _run(tmp_path, monkeypatch, {**SMALL_BATCHES, "compute": compute})
    assert not (tmp_path / "data" / "03_primary" / "cams").exists()  # no node ran
