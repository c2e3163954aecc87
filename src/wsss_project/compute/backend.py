"""The `compute` parameters and the mappers that run one stage's tile batches, in order.

A stage describes its model as a `WorkerModel` (a fingerprint key, a picklable builder and the
weights it builds from) and its per-batch work as `apply(model, batch) -> result`; a mapper returns
the results in the order of the batches:

- `LocalMapper` (`compute.backend: local`): builds the model once here and applies it batch by batch.
- `DaskMapper` (`compute.backend: dask`): sends the weights once to every worker
  (`client.scatter(..., broadcast=True)`), each worker builds the model once (worker.py), one task per
  batch; at most `TASKS_IN_FLIGHT_PER_THREAD` tasks per worker thread are queued, so the driver
  holds a few batches, not the whole tile set. Results are taken in submission order: the merge is
  in tile-id order whatever worker finishes first.

Each batch is the local backend's batches (the stage's own inference batch, `task_spans`), computed
by the same function, so both backends give the same bytes.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

logger = logging.getLogger(__name__)

SECTION = "compute"
COMPUTE_INPUT = "params:compute"  # the node input that marks a node whose tile work may run on a cluster
LOCAL, DASK = "local", "dask"
BACKENDS = (LOCAL, DASK)
# The shipped values of the keys only `backend: dask` reads (conf/base/parameters_compute.yml): with
# `backend: local` a value changed from these would do nothing, so the schema refuses it.
DASK_ONLY_DEFAULTS = MappingProxyType({
    "scheduler_address": None, "n_workers": None, "threads_per_worker": 1, "tiles_per_task": 32, "connect_timeout": 10,
})
# Tasks queued per worker thread: each thread has its next batch waiting (no idle gap between tasks)
# while the driver keeps only a few batches of tiles in memory.
TASKS_IN_FLIGHT_PER_THREAD = 2
# A progress line every this many tasks (and at the last one).
PROGRESS_EVERY_TASKS = 10


def uses_dask(compute: Mapping[str, Any] | None) -> bool:
    """Whether per-tile work runs on a Dask cluster (None: a node called without `compute` runs locally)."""
    if compute is None:
        return False
    # Imported here: the schema imports this module (for BACKENDS).
    from wsss_project.validation.schema import check_section

    check_section(compute, SECTION)
    return compute["backend"] == DASK


def task_spans(n_tiles: int, batch_size: int, tiles_per_task: int) -> list[tuple[int, int]]:
    """(start, stop) of each task over `n_tiles` ordered tiles: `tiles_per_task` rounded up to whole
    batches of `batch_size`, so that every inference batch is the one the local backend runs."""
    per_task = math.ceil(tiles_per_task / batch_size) * batch_size
    return [(start, min(start + per_task, n_tiles)) for start in range(0, n_tiles, per_task)]


@dataclass(frozen=True)
class WorkerModel:
    """What a worker needs to build a model once.

    key: fingerprint of the weights and settings (utils/fingerprint.py), the worker cache's key.
    build: payload -> the ready model (importable function or partial: it is pickled to the workers).
    payload: the weights (e.g. a state_dict), sent once to every worker.
    exclusive: the model serves one task at a time per worker (not thread-safe, e.g. SAM's predictor).
    """

    key: str
    build: Callable[[Any], Any]
    payload: Any = None
    exclusive: bool = False


class LocalMapper:
    """`compute.backend: local`: the model built once, here, and applied batch by batch."""

    backend = LOCAL

    def close(self) -> None:
        """Nothing to free: for symmetry with DaskMapper."""

    def map(self, model: WorkerModel, apply: Callable[[Any, Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        built = model.build(model.payload)
        for item in items:
            yield apply(built, item)


class DaskMapper:
    """`compute.backend: dask`: one task per batch on `client`'s workers, results in batch order."""

    backend = DASK

    def __init__(self, client: Any) -> None:
        self.client = client
        self._payloads: dict[str, Any] = {}  # model key -> the future of its weights on every worker

    def _payload(self, model: WorkerModel) -> Any:
        """The weights of `model` on every worker, sent once per mapper (a node), not once per map."""
        if model.key not in self._payloads:
            # A list of one: scatter would send a dict's values one by one.
            [self._payloads[model.key]] = self.client.scatter([model.payload], broadcast=True, hash=False)
        return self._payloads[model.key]

    def close(self) -> None:
        """Frees the weights sent to the workers (their built models stay in the worker cache)."""
        payloads, self._payloads = self._payloads, {}
        for future in payloads.values():
            future.release()

    def threads(self) -> int:
        """Worker threads of the cluster now."""
        return max(sum(self.client.nthreads().values()), 1)

    def map(self, model: WorkerModel, apply: Callable[[Any, Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        from .worker import run_batch

        payload = self._payload(model)
        limit = self.threads() * TASKS_IN_FLIGHT_PER_THREAD
        pending: deque = deque()
        done, started = 0, time.perf_counter()
        try:
            for item in items:
                pending.append(self.client.submit(
                    run_batch, model.key, model.build, payload, model.exclusive, apply, item, pure=False
                ))
                while len(pending) >= limit or (pending and pending[0].done()):
                    done += 1
                    yield self._result(pending.popleft(), done, started)
            while pending:
                done += 1
                yield self._result(pending.popleft(), done, started)
        finally:
            for future in pending:
                future.cancel()

    @staticmethod
    def _result(future: Any, done: int, started: float) -> Any:
        result = future.result()
        if done % PROGRESS_EVERY_TASKS == 0:
            logger.info("Dask: %d tasks done (%.1f tasks/s)", done, done / max(time.perf_counter() - started, 1e-9))
        return result
