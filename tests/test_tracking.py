"""Finding the project's MLflow database without creating one (the notebook's first cell)."""

from __future__ import annotations

import pytest

from wsss_project.tracking import find_project_root, project_sqlite_uri, tracking_database


def test_a_relative_sqlite_uri_is_made_absolute_against_the_project_root(tmp_path):
    assert project_sqlite_uri("sqlite:///mlflow.db", tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert project_sqlite_uri("sqlite:////srv/runs.db", tmp_path) == "sqlite:////srv/runs.db"
    assert project_sqlite_uri("sqlite:///:memory:", tmp_path) == "sqlite:///:memory:"
    assert project_sqlite_uri("http://127.0.0.1:5000", tmp_path) == "http://127.0.0.1:5000"


def test_the_project_root_is_found_from_a_subfolder(project_copy):
    (project_copy / "notebooks").mkdir()
    assert find_project_root(project_copy / "notebooks") == project_copy.resolve()


def test_outside_a_project_the_error_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        find_project_root(tmp_path)


def test_a_missing_database_is_reported_and_never_created(project_copy):
    with pytest.raises(FileNotFoundError, match=str(project_copy.resolve() / "mlflow.db")):
        tracking_database(project_copy)
    assert not (project_copy / "mlflow.db").exists()


def test_the_database_is_the_one_kedro_run_writes_at_the_project_root(project_copy):
    (project_copy / "mlflow.db").touch()
    assert tracking_database(project_copy) == project_copy.resolve() / "mlflow.db"


def test_conf_local_moves_the_database(project_copy, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("runs") / "tracking.db"
    elsewhere.touch()
    (project_copy / "conf" / "local" / "mlflow.yml").write_text(
        f"server:\n  mlflow_tracking_uri: sqlite:///{elsewhere}\n"
    )
    assert tracking_database(project_copy) == elsewhere
