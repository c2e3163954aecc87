"""Worker side of `compute.backend: dask`: each worker builds each model once and keeps it.

The cache lives on the worker object (a WorkerPlugin registered by cluster.open_cluster), never in
module state: tasks find it as `get_worker().plugins[PLUGIN_NAME]`. A model is keyed by its
fingerprint (utils/fingerprint.py: weights, settings, device), so two stages or two namespaces that
need the same model share one copy, and a retrained model gets a new key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from distributed import Worker, WorkerPlugin, get_worker

logger = logging.getLogger(__name__)

PLUGIN_NAME = "wsss-models"
# Models a worker keeps. One run needs a localizer, a segmenter and two ResUNets (weak and
# supervised); older ones are dropped first, so a long-lived cluster does not grow without bound.
MAX_CACHED_MODELS = 4


class ModelCache(WorkerPlugin):
    """Per worker: torch intra-op threads = `compute.threads_per_worker`, and models built once per key.

    `loads` counts builds per key (the log at the end of a run reports it: one per worker and model).
    """

    def __init__(self, torch_threads: int) -> None:
        self.torch_threads = int(torch_threads)

    def setup(self, worker: Worker) -> None:
        import torch

        torch.set_num_threads(self.torch_threads)
        self.models: OrderedDict[str, Any] = OrderedDict()
        self.loads: Counter[str] = Counter()
        self.lock = threading.Lock()  # a worker may run several tasks at once (threads_per_worker)
        self.exclusive_locks: dict[str, threading.Lock] = {}

    def teardown(self, worker: Worker) -> None:
        self.models.clear()

    def model(self, key: str, build: Callable[[Any], Any], payload: Any) -> Any:
        """The model named `key`, built from `payload` (its weights) on first use on this worker."""
        with self.lock:  # held while building: two threads must not build one model twice
            if key in self.models:
                self.models.move_to_end(key)
                return self.models[key]
            started = time.perf_counter()
            model = build(payload)
            self.models[key] = model
            self.loads[key] += 1
            while len(self.models) > MAX_CACHED_MODELS:
                self.models.popitem(last=False)
            logger.info("Worker built model %s in %.1f s", key[:12], time.perf_counter() - started)
            return model

    def exclusive(self, key: str) -> threading.Lock:
        """A lock per model, for models that must run one task at a time (SAM's predictor holds an image)."""
        with self.lock:
            return self.exclusive_locks.setdefault(key, threading.Lock())


def run_batch(
    key: str, build: Callable[[Any], Any], payload: Any, exclusive: bool, apply: Callable[[Any, Any], Any], item: Any,
) -> Any:
    """One task: this worker's copy of the model (built on first use), applied to one batch of tiles."""
    cache: ModelCache = get_worker().plugins[PLUGIN_NAME]
    model = cache.model(key, build, payload)
    if not exclusive:
        return apply(model, item)
    with cache.exclusive(key):
        return apply(model, item)


def load_counts(dask_worker: Worker) -> dict[str, int]:
    """How many times this worker built each model (for Client.run)."""
    plugin = dask_worker.plugins.get(PLUGIN_NAME)
    return dict(plugin.loads) if plugin is not None else {}
