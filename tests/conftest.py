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



@pytest.fixture
def project_copy(tmp_path, monkeypatch) -> Path:
    """The project's pyproject.toml and conf/ in a temporary folder, which becomes the cwd."""
    shutil.copy(PROJECT_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(PROJECT_ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "src").mkdir()  # Kedro checks it exists; the package itself is installed
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def real_data() -> Path:
    """../shared/data/landslide_real (skips where it is absent)."""
    if not (REAL_DATA / "images").is_dir():
        pytest.skip(f"real landslide data not found at {REAL_DATA}")
    return REAL_DATA
