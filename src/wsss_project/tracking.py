"""Where this project's MLflow runs are, found without opening (and so creating) a database.

kedro-mlflow opens the `sqlite:///mlflow.db` of conf/base/mlflow.yml relative to the current
directory, and SQLite creates a missing file on connect: a notebook started in notebooks/ would
log into a new, empty notebooks/mlflow.db. These helpers locate the project and its database first.
"""

from __future__ import annotations

from pathlib import Path

from kedro.config import OmegaConfigLoader
from kedro.utils import find_kedro_project

from wsss_project.settings import CONFIG_LOADER_ARGS

SQLITE_PREFIX = "sqlite:///"
MLFLOW_CONFIG_PATTERNS = {"mlflow": ["mlflow*", "mlflow*/**"]}  # as kedro-mlflow reads it


def find_project_root(start: Path) -> Path:
    """The Kedro project holding `start` (itself or the nearest parent with a Kedro pyproject.toml)."""
    root = find_kedro_project(Path(start).resolve())
    if root is None:
        raise FileNotFoundError(
            f"no Kedro project (pyproject.toml with [tool.kedro]) in {Path(start).resolve()} or any folder "
            "above it: start Jupyter inside the wsss_project folder"
        )
    return root


def tracking_uri(project_root: Path) -> str:
    """`server.mlflow_tracking_uri` of the project's mlflow.yml (base, overridden by local)."""
    loader = OmegaConfigLoader(str(project_root / "conf"), config_patterns=MLFLOW_CONFIG_PATTERNS, **CONFIG_LOADER_ARGS)
    return loader["mlflow"]["server"]["mlflow_tracking_uri"]


def tracking_database(project_root: Path) -> Path:
    """The project's MLflow SQLite file, as `kedro run` from the project root opens it.

    Raises FileNotFoundError naming the file it looked for when no run has created it yet, so that
    nothing creates an empty one; a non-SQLite tracking URI (a server) is a ValueError.
    """
    uri = tracking_uri(project_root)
    if not uri.startswith(SQLITE_PREFIX):
        raise ValueError(f"conf mlflow.yml `server.mlflow_tracking_uri` is {uri!r}, not a {SQLITE_PREFIX} file")
    database = project_root / uri.removeprefix(SQLITE_PREFIX)  # an absolute path stays absolute
    if not database.is_file():
        raise FileNotFoundError(
            f"no MLflow database at {database} ({uri} of conf mlflow.yml, from the project root "
            f"{project_root}): run `kedro run` there first"
        )
    return database
