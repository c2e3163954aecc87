"""The Dask cluster of `compute.backend: dask`: started here or connected to, one per `kedro run`.

- `compute.scheduler_address: null`: a LocalCluster of `n_workers` processes (null = one per usable
  core / threads_per_worker) with `threads_per_worker` threads each, bound to 127.0.0.1, no
  dashboard, closed when the run ends.
- `compute.scheduler_address: tcp://host:8786`: the existing cluster there. It is never closed
  here: only this run's client and its worker plugin (the models it loaded) are removed.

`ComputeClusterHook` opens the cluster after the run's parameters are validated and before the
first node, when the run has a node that takes `params:compute`, and closes it when the run ends
or fails. Nodes find it with `tile_mapper(compute)`, which reuses the run's client; a node called
outside a run (a test, a notebook) opens a cluster of its own for its duration.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

from kedro.framework.hooks import hook_impl

from wsss_project.errors import UserInputError
from wsss_project.utils.fingerprint import params_fingerprint

from .backend import COMPUTE_INPUT, SECTION, DaskMapper, LocalMapper, uses_dask

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"  # a LocalCluster listens on this machine only
RUN_MARK = "_wsss_compute"  # attribute of a client opened by open_cluster: the fingerprint of its settings


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def local_workers(compute: Mapping[str, Any]) -> int:
    """LocalCluster worker processes: `compute.n_workers`, null = usable cores // threads_per_worker (>= 1)."""
    if compute["n_workers"] is not None:
        return int(compute["n_workers"])
    return max(_usable_cores() // int(compute["threads_per_worker"]), 1)


def _connect(address: str, timeout: float) -> Any:
    from distributed import Client

    try:
        return Client(address, timeout=timeout, set_as_default=True)
    except (OSError, TimeoutError, ValueError, TypeError) as err:
        raise UserInputError(
            f"parameter `compute.scheduler_address`: no Dask scheduler answered at {address!r} within "
            f"{timeout:g} s (compute.connect_timeout): {err}. Start one (`dask scheduler`) or set "
            "scheduler_address: null for a local cluster"
        ) from None


@contextmanager
def open_cluster(compute: Mapping[str, Any]) -> Iterator[Any]:
    """A Dask client on the cluster of `compute` (started here, or the one at scheduler_address),
    with the model cache on every worker; on exit, a cluster started here is closed, another is not."""
    from distributed import Client, LocalCluster

    from .worker import PLUGIN_NAME, ModelCache

    uses_dask(compute)  # checks the section
    threads = int(compute["threads_per_worker"])
    address = compute["scheduler_address"]
    cluster = None
    if address:
        client = _connect(str(address), float(compute["connect_timeout"]))
    else:
        cluster = LocalCluster(
            n_workers=local_workers(compute), threads_per_worker=threads, processes=True, host=LOOPBACK,
            dashboard_address=None, silence_logs=logging.WARNING,
        )
        client = Client(cluster, set_as_default=True)
    try:
        setattr(client, RUN_MARK, params_fingerprint(SECTION, dict(compute)))
        client.register_plugin(ModelCache(threads), name=PLUGIN_NAME)
        workers = client.nthreads()
        logger.info(
            "Dask: %s at %s, %d workers, %d threads (torch threads per worker: %d)",
            "existing cluster" if cluster is None else "LocalCluster started", client.scheduler.address,
            len(workers), sum(workers.values()), threads,
        )
        yield client
        _log_model_loads(client)
    finally:
        if cluster is None:
            try:
                client.unregister_worker_plugin(PLUGIN_NAME)  # frees the models this run loaded there
            finally:
                client.close()
        else:
            client.close()
            cluster.close()


def _log_model_loads(client: Any) -> None:
    """How many times each worker built each model (one per worker and model is the design)."""
    from .worker import load_counts

    per_worker = client.run(load_counts)
    for worker, counts in sorted(per_worker.items()):
        logger.info("Dask worker %s built %d models: %s", worker, len(counts),
                    ", ".join(f"{key[:12]} x{n}" for key, n in sorted(counts.items())) or "none")


def run_client(compute: Mapping[str, Any]) -> Any | None:
    """The client that `open_cluster` opened for these settings in this process (the run's), or None."""
    from distributed import default_client

    try:
        client = default_client()
    except ValueError:
        return None
    if getattr(client, RUN_MARK, None) != params_fingerprint(SECTION, dict(compute)) or client.status != "running":
        return None
    return client


@contextmanager
def tile_mapper(compute: Mapping[str, Any] | None) -> Iterator[LocalMapper | DaskMapper]:
    """The mapper of `compute.backend` (None = local): on the run's cluster when the hook opened one,
    else on a cluster opened for this block."""
    if not uses_dask(compute):
        yield LocalMapper()
        return
    with ExitStack() as stack:
        client = run_client(compute) or stack.enter_context(open_cluster(compute))
        mapper = DaskMapper(client)
        stack.callback(mapper.close)
        yield mapper


class ComputeClusterHook:
    """One Dask cluster per `kedro run` with `compute.backend: dask` (see the module docstring).

    trylast: opened after every other before_pipeline_run hook (the parameters are validated first),
    so a rejected run starts no cluster.
    """

    def __init__(self) -> None:
        self._open: ExitStack | None = None

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        compute = catalog.load("parameters").get(SECTION)
        if not uses_dask(compute) or not any(COMPUTE_INPUT in node.inputs for node in pipeline.nodes):
            return
        stack = ExitStack()
        stack.enter_context(open_cluster(compute))
        self._open = stack

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._close()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._close()

    def _close(self) -> None:
        stack, self._open = self._open, None
        if stack is not None:
            stack.close()
