"""Where this project's MLflow runs are, wherever Python runs from.

kedro-mlflow makes a relative *path* in mlflow.yml absolute against the project root, but passes
`sqlite:///mlflow.db` on as it is, and SQLite opens it from the current folder and creates it
when missing: a notebook started in notebooks/ logged into a new, empty notebooks/mlflow.db, and
a second project opened in the same process logged into the first one's database (MLflow keeps
one store per URI). The project hook makes the URI absolute with :func:`project_sqlite_uri`; the
notebook checks with :func:`tracking_database` that the runs exist before anything connects.
"""

from __future__ import annotations

from pathlib import Path

from kedro.config import OmegaConfigLoader
from kedro.utils import find_kedro_project

SQLITE_PREFIX = "sqlite:///"
SQLITE_IN_MEMORY = ":memory:"
MLFLOW_CONFIG_PATTERNS = ("mlflow*", "mlflow*/**", "**/mlflow*")  # as kedro-mlflow reads mlflow.yml


def project_sqlite_uri(uri: str | None, project_root: Path) -> str | None:
    """A relative `sqlite:///<file>` URI made absolute against the project root; any other URI as given."""
    if uri is None or not uri.startswith(SQLITE_PREFIX):
        return uri
    path = uri.removeprefix(SQLITE_PREFIX)
    if path in ("", SQLITE_IN_MEMORY) or Path(path).is_absolute():
        return uri
    return SQLITE_PREFIX + (Path(project_root).resolve() / path).as_posix()


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
    """`server.mlflow_tracking_uri` of the project's mlflow.yml (base, overridden by local), absolute."""
    # Imported here: settings imports the project hooks, which import this module.
    from wsss_project.settings import CONFIG_LOADER_ARGS

    loader = OmegaConfigLoader(
        str(project_root / "conf"), config_patterns={"mlflow": list(MLFLOW_CONFIG_PATTERNS)}, **CONFIG_LOADER_ARGS
    )
    return project_sqlite_uri(loader["mlflow"]["server"]["mlflow_tracking_uri"], project_root)


def tracking_database(project_root: Path) -> Path:
    """The project's MLflow SQLite file, which `kedro run` writes.

    Raises FileNotFoundError naming the file it looked for when no run has created it yet (so that
    nothing creates an empty one); a tracking URI that is not a SQLite file is a ValueError.
    """
    uri = tracking_uri(project_root)
    if not uri.startswith(SQLITE_PREFIX):
        raise ValueError(f"conf mlflow.yml `server.mlflow_tracking_uri` is {uri!r}, not a {SQLITE_PREFIX} file")
    database = Path(uri.removeprefix(SQLITE_PREFIX))
    if not database.is_file():
        raise FileNotFoundError(
            f"no MLflow database at {database} (server.mlflow_tracking_uri of conf mlflow.yml, in the "
            f"project {project_root}): run `kedro run` there first"
        )
    return database
