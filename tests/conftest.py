"""Shared fixtures: a throw-away copy of the Kedro project, and the real landslide data if present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from project_files import PROJECT_ROOT, copy_project

REAL_DATA = Path(os.environ.get("WSSS_REAL_DATA", PROJECT_ROOT.parent / "shared" / "data" / "landslide_real"))

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


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
