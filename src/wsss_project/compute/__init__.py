"""Where per-tile work runs (`compute.backend`): in this process (`local`) or as Dask distributed tasks
(`dask`), with the same results.

- backend.py: the `compute` parameters, the mappers that run a stage's tile batches (local or on a
  cluster) and the worker-side model description (`WorkerModel`).
- cluster.py: opening a LocalCluster or connecting to `compute.scheduler_address`, and the hook that
  keeps one cluster for a whole `kedro run`.
- worker.py: the worker plugin that loads each model once per worker.
"""
