"""Shared fixtures: a throw-away copy of the Kedro project, and the real landslide data if present."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("WSSS_REAL_DATA", PROJECT_ROOT.parent / "shared" / "data" / "landslide_real"))

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def copy_project(destination: Path) -> Path:
    """The project's pyproject.toml and conf/ (without conf/local) copied into `destination`."""
    shutil.copy(PROJECT_ROOT / "pyproject.toml", destination / "pyproject.toml")
    shutil.copytree(PROJECT_ROOT / "conf", destination / "conf", ignore=shutil.ignore_patterns("local"))
    (destination / "conf" / "local").mkdir()
    (destination / "src").mkdir()  # Kedro checks it exists; the package itself is installed
    return destination


@pytest.fixture
def project_copy(tmp_path, monkeypatch) -> Path:
    """The project's pyproject.toml and conf/ in a temporary folder, which becomes the cwd."""
    monkeypatch.chdir(copy_project(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def module_project_copy(tmp_path_factory) -> Path:
    """A project copy shared by one test module (for one costly run), the cwd while it lasts:
    kedro-mlflow opens `sqlite:///mlflow.db` relative to the cwd."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        project = copy_project(tmp_path_factory.mktemp("project"))
        monkeypatch.chdir(project)
        yield project


@pytest.fixture
def real_data() -> Path:
    """../shared/data/landslide_real (skips where it is absent)."""
    if not (REAL_DATA / "images").is_dir():
        pytest.skip(f"real landslide data not found at {REAL_DATA}")
    return REAL_DATA
