"""compute/: the Dask mapper gives the local mapper's results in batch order, each worker builds a
model once, a cluster the run did not start stays up, and a bad scheduler address names its parameter."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch
from distributed import Client, LocalCluster, get_worker

from wsss_project.compute.backend import (
    DASK,
    DASK_ONLY_DEFAULTS,
    LOCAL,
    DaskMapper,
    LocalMapper,
    WorkerModel,
    task_spans,
)
from wsss_project.compute.cluster import open_cluster, run_client, tile_mapper
from wsss_project.compute.worker import PLUGIN_NAME, load_counts
from wsss_project.errors import UserInputError
from wsss_project.utils.fingerprint import model_fingerprint

N_BATCHES = 12
STALL_SECONDS = 0.01


def _compute(**changes) -> dict:
    return {"backend": DASK, **DASK_ONLY_DEFAULTS, "connect_timeout": 2, **changes}


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes, as the end-to-end test and the benchmark use."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as local:
        yield local


def _build_linear(state: dict) -> torch.nn.Module:
    layer = torch.nn.Linear(4, 3)
    layer.load_state_dict(state)
    return layer.eval()


def _apply(model: torch.nn.Module, batch: tuple[int, np.ndarray]) -> np.ndarray:
    index, x = batch
    time.sleep(STALL_SECONDS * (N_BATCHES - index))  # earlier batches finish later: out of order
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def _apply_where(model: torch.nn.Module, batch: tuple[int, np.ndarray]) -> tuple[str, int, np.ndarray]:
    return get_worker().address, id(model), _apply(model, batch)


def _model() -> WorkerModel:
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in torch.nn.Linear(4, 3).state_dict().items()}
    return WorkerModel(model_fingerprint("linear", state, {}), _build_linear, state)


def _batches() -> list[tuple[int, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(k, rng.normal(size=(5, 4)).astype(np.float32)) for k in range(N_BATCHES)]


@pytest.mark.parametrize("exclusive", [False, True])  # True: one task at a time per worker (SAM)
def test_the_dask_mapper_gives_the_local_results_in_batch_order_and_each_worker_builds_the_model_once(
    cluster, exclusive,
):
    model = dataclasses.replace(_model(), exclusive=exclusive)
    local = list(LocalMapper().map(model, _apply, _batches()))
    with open_cluster(_compute(scheduler_address=cluster.scheduler_address)) as client:
        where = list(DaskMapper(client).map(model, _apply_where, _batches()))
        counts = client.run(load_counts)
    assert all(np.array_equal(a, b) for a, (_, _, b) in zip(local, where, strict=True))
    assert len({address for address, _, _ in where}) == 2, "both workers should have taken tasks"
    # one model object per worker, built once there
    models = {}
    for address, model_id, _ in where:
        assert models.setdefault(address, model_id) == model_id
    assert {address: per_key[model.key] for address, per_key in counts.items()} == dict.fromkeys(counts, 1)


def test_a_cluster_the_run_did_not_start_stays_up_without_the_runs_models(cluster):
    compute = _compute(scheduler_address=cluster.scheduler_address)
    with open_cluster(compute) as client:
        assert run_client(compute) is client  # nodes reuse the open client
        list(DaskMapper(client).map(_model(), _apply, _batches()[:2]))
    assert run_client(compute) is None
    with Client(cluster) as owner:
        assert owner.submit(sum, [1, 2]).result() == 3
        assert not any(owner.run(lambda dask_worker: PLUGIN_NAME in dask_worker.plugins).values())


def test_a_scheduler_that_does_not_answer_is_an_error_naming_compute_scheduler_address():
    with pytest.raises(UserInputError, match=r"compute\.scheduler_address"):
        with open_cluster(_compute(scheduler_address="tcp://127.0.0.1:9", connect_timeout=1)):
            pass


def test_the_local_backend_opens_no_cluster():
    with tile_mapper({"backend": LOCAL, **DASK_ONLY_DEFAULTS}) as mapper:
        assert isinstance(mapper, LocalMapper)
    with tile_mapper(None) as mapper:
        assert isinstance(mapper, LocalMapper)


def test_tasks_hold_whole_inference_batches():
    assert task_spans(10, 4, 5) == [(0, 8), (8, 10)]  # 5 tiles per task round up to two batches of 4
    assert task_spans(10, 1, 4) == [(0, 4), (4, 8), (8, 10)]
    assert task_spans(0, 4, 4) == []


def test_the_model_fingerprint_follows_the_weights_and_the_settings():
    model = _model()
    same = {k: v.clone() for k, v in model.payload.items()}
    assert model_fingerprint("linear", same, {}) == model.key
    assert model_fingerprint("linear", same, {"device": "cuda"}) != model.key
    same["bias"][0] += 1
    assert model_fingerprint("linear", same, {}) != model.key
