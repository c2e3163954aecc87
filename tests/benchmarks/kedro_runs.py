"""Running the project's pipelines from a benchmark: a work folder with the project's conf, one
KedroSession per pipeline so that each stage is timed on its own."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def make_workdir(path: Path) -> Path:
    """A fresh folder holding the project's pyproject.toml and conf/ (outputs land there)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "pyproject.toml", path / "pyproject.toml")
    shutil.copytree(PROJECT_ROOT / "conf", path / "conf", ignore=shutil.ignore_patterns("local"))
    (path / "conf" / "local").mkdir()
    (path / "src").mkdir()
    return path


def run_stages(workdir: Path, stages: list[str], params: dict) -> dict[str, float]:
    """Run each pipeline in turn in `workdir`; return seconds per stage."""
    bootstrap_project(workdir)
    seconds = {}
    for stage in stages:
        started = time.perf_counter()
        with KedroSession.create(project_path=workdir, runtime_params=params) as session:
            session.run(pipeline_name=stage)
        end_mlflow_run()
        seconds[stage] = time.perf_counter() - started
    return seconds


def latest_json(path: Path) -> dict:
    """The newest version of a versioned JSON dataset."""
    return json.loads((sorted(path.iterdir())[-1] / path.name).read_text())


def latest_parquet(path: Path) -> pd.DataFrame:
    """The newest version of a versioned parquet dataset."""
    return pd.read_parquet(sorted(path.iterdir())[-1] / path.name)


def end_mlflow_run() -> None:
    """Close the run kedro-mlflow leaves active in this process, so the next session opens its own
    (a CLI `kedro run` is a process of its own and never meets this)."""
    while mlflow.active_run() is not None:
        mlflow.end_run()


def deep_update(base: dict, extra: dict) -> dict:
    """`extra` merged into `base` key by key, nested dicts too, as `kedro run --params` merges (in place)."""
    for key, value in extra.items():
        base[key] = deep_update(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def default_run_folder(required: str) -> Path:
    """The default run that read-only benchmarks reuse: $WSSS_BENCH_DIR (default
    /tmp/wsss_bench/default_real); skips the benchmark when `required` (a path in it) is missing."""
    workdir = Path(os.environ.get("WSSS_BENCH_DIR", "/tmp/wsss_bench/default_real"))
    if not (workdir / required).exists():
        pytest.skip(f"no default run in {workdir}: run tests/benchmarks/test_default_real.py first")
    return workdir


def load_from_run(workdir: Path, names: tuple[str, ...]) -> list:
    """The datasets `names` of the run in `workdir`, loaded through its own catalog."""
    bootstrap_project(workdir)
    with KedroSession.create(project_path=workdir) as session:
        catalog = session.load_context().catalog
        return [catalog.load(name) for name in names]
