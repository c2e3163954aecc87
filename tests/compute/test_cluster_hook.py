"""ComputeClusterHook: one cluster per run, only for a run whose nodes use it, closed when the run
ends or fails; nodes reuse it."""

from __future__ import annotations

from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import node, pipeline

from wsss_project.compute.backend import COMPUTE_INPUT, DASK, DASK_ONLY_DEFAULTS, LOCAL, DaskMapper
from wsss_project.compute.cluster import ComputeClusterHook, run_client, tile_mapper

DASK_COMPUTE = {"backend": DASK, **DASK_ONLY_DEFAULTS, "n_workers": 1}


def _identity(x, compute=None):
    return x


def _run_parts(compute: dict, uses_compute: bool = True):
    inputs = ["x", COMPUTE_INPUT] if uses_compute else ["x"]
    catalog = DataCatalog({"parameters": MemoryDataset({"compute": compute})})
    return pipeline([node(_identity, inputs, "y")]), catalog


def test_a_dask_run_gets_one_cluster_that_nodes_reuse_and_that_closes_when_the_run_fails():
    hook = ComputeClusterHook()
    pipe, catalog = _run_parts(DASK_COMPUTE)
    hook.before_pipeline_run({}, pipe, catalog)
    client = run_client(DASK_COMPUTE)
    assert client is not None and client.status == "running"
    with tile_mapper(DASK_COMPUTE) as mapper:  # what a node does: the run's client, no second cluster
        assert isinstance(mapper, DaskMapper) and mapper.client is client
    assert client.status == "running"
    hook.on_pipeline_error()
    assert client.status == "closed" and run_client(DASK_COMPUTE) is None


def test_no_cluster_for_the_local_backend_or_a_run_without_per_tile_nodes():
    hook = ComputeClusterHook()
    for compute, uses_compute in (({"backend": LOCAL, **DASK_ONLY_DEFAULTS}, True), (DASK_COMPUTE, False)):
        pipe, catalog = _run_parts(compute, uses_compute)
        hook.before_pipeline_run({}, pipe, catalog)
        assert run_client(DASK_COMPUTE) is None
        hook.after_pipeline_run()
