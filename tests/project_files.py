"""A throw-away copy of the Kedro project's configuration, for tests that run Kedro sessions.

A plain module (not conftest.py) so test modules can import it: `tests/benchmarks/conftest.py`
would shadow a `from conftest import ...` depending on collection order."""

from __future__ import annotations

import shutil
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def copy_project(destination: Path) -> Path:
    """The project's pyproject.toml and conf/ (without conf/local) copied into `destination`."""
    shutil.copy(PROJECT_ROOT / "pyproject.toml", destination / "pyproject.toml")
    shutil.copytree(PROJECT_ROOT / "conf", destination / "conf", ignore=shutil.ignore_patterns("local"))
    (destination / "conf" / "local").mkdir()
    (destination / "src").mkdir()  # Kedro checks it exists; the package itself is installed
    return destination


def latest_version(path: Path) -> Path:
    """The newest version of a versioned dataset file (`<path>/<version>/<name>`)."""
    return sorted(path.iterdir())[-1] / path.name


def run_project(project: Path, params: dict) -> Path:
    """One `kedro run` of the project copy at `project` with runtime `params`; its data folder."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run()
    return project / "data"
