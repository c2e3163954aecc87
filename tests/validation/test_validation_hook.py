"""Runs with a bad parameter or input fail before any node runs, and `kedro run` says so once."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from mlflow import MlflowClient
from test_run import TINY_PARAMS

import wsss_project
from wsss_project.errors import UserInputError

TYPO = "prompt_generaton.threshold=50"
TYPO_MESSAGE = "unknown parameter `prompt_generaton.threshold`; did you mean `prompt_generation.threshold`?"


def _scene_folder(root: Path, images: dict[str, np.ndarray | bytes]) -> dict:
    """`data` runtime parameters of a folder source holding these images (a landslide-free mask each)."""
    for sub in ("images", "masks"):
        (root / sub).mkdir()
    for name, image in images.items():
        if isinstance(image, bytes):
            (root / "images" / f"{name}.png").write_bytes(image)
        else:
            cv2.imwrite(str(root / "images" / f"{name}.png"), image)
        cv2.imwrite(str(root / "masks" / f"{name}.png"), np.zeros((64, 64), np.uint8))
    return {"data": {"source": "folder", "folder": {"images_dir": str(root / "images"), "masks_dir": str(root / "masks")}}}


def _run(project: Path, runtime_params: dict) -> str:
    """The UserInputError message of a KedroSession run of the default pipeline."""
    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=runtime_params) as session:
        with pytest.raises(UserInputError) as info:
            session.run()
    return str(info.value)


def _corrupt(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("typo", TYPO_MESSAGE),
        ("threshold_300", "parameter `prompt_generation.threshold` must be 'auto' or a number in 0..255, got 300"),
        ("threshold_high", "parameter `prompt_generation.threshold` must be 'auto' or a number in 0..255, got 'high'"),
        ("missing_sam", "SAM checkpoint 'sam_vit_b.pth' (parameter `sam_labeling.sam.checkpoint`) does not exist"),
        ("corrupt_sam", "file sam_vit_b.pth is not a readable SAM checkpoint (parameter `sam_labeling.sam.checkpoint`)"),
        ("one_scene", "parameter `data.folder.images_dir`: 1 scene(s)"),
    ],
)
def test_a_bad_run_fails_before_any_node_and_names_what_to_fix(project_copy, tmp_path, fault, expected):
    runtime = {
        "typo": {"prompt_generaton": {"threshold": 50}},
        "threshold_300": {"prompt_generation": {"threshold": 300}},
        "threshold_high": {"prompt_generation": {"threshold": "high"}},
        "missing_sam": {"sam_labeling": {"sam": {"checkpoint": "sam_vit_b.pth"}}},
        "corrupt_sam": {"sam_labeling": {"sam": {"checkpoint": "sam_vit_b.pth"}}},
        "one_scene": {},
    }[fault]
    if fault == "corrupt_sam":
        _corrupt(project_copy / "sam_vit_b.pth")
    if fault == "one_scene":
        runtime = _scene_folder(tmp_path, {"bijie_001": np.zeros((64, 64, 3), np.uint8)})
    assert expected in _run(project_copy, runtime)
    assert not (project_copy / "data").exists(), "a node ran"
    assert not _mlflow_runs(project_copy), "an MLflow run was opened"


def _mlflow_runs(project: Path) -> list:
    """The runs in the project's MLflow store (read without touching mlflow's global tracking URI)."""
    if not (project / "mlflow.db").exists():
        return []
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.fixture
def no_leaked_mlflow_run():
    """End an MLflow run an earlier session of this process left active (kedro-mlflow with
    `nested: True` can): this test's run would log its parameters into it."""
    if mlflow.active_run() is not None:
        mlflow.end_run()


def test_masks_without_landslide_stop_the_run_at_localization_saying_why(project_copy, no_leaked_mlflow_run):
    tiny = copy.deepcopy(TINY_PARAMS)
    tiny["data"]["synthetic"]["generator"] = {"empty_scene_probability": 1.0}  # no scene has a landslide
    message = _run(project_copy, tiny)
    assert "have no tile labelled `landslide`" in message and "cannot learn" in message
    # Kedro orders independent nodes by name, so the supervised reference (it needs no image-level
    # labels) may already have trained; the localizer must not have.
    assert not (project_copy / "data" / "06_models" / "cam_model.pt").exists(), "the localizer was trained"


def _kedro_run(project: Path, params: str) -> subprocess.CompletedProcess:
    """`kedro run --params ...` in a subprocess importing this checkout of the package."""
    env = {**os.environ, "PYTHONPATH": str(Path(wsss_project.__file__).parents[1]), "KEDRO_DISABLE_TELEMETRY": "1"}
    return subprocess.run([sys.executable, "-m", "kedro", "run", "--params", params], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_kedro_run_prints_a_parameter_typo_once_without_a_traceback(project_copy):
    result = _kedro_run(project_copy, TYPO)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert output.count("prompt_generaton") == 1 and TYPO_MESSAGE in output
    assert "Traceback" not in output
    assert not (project_copy / "data").exists()


@pytest.mark.slow
def test_kedro_run_prints_a_node_s_user_error_once_without_a_traceback(project_copy, tmp_path):
    """A corrupt image is found by the first node (load_scenes), which reads the files."""
    scenes = _scene_folder(tmp_path, {"bijie_001": np.zeros((64, 64, 3), np.uint8), "bijie_002": b"not a png"})
    folder = scenes["data"]["folder"]
    result = _kedro_run(project_copy, f"data.source=folder,data.folder.images_dir={folder['images_dir']},"
                                      f"data.folder.masks_dir={folder['masks_dir']}")
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert output.count("bijie_002.png: cannot read image") == 1, output
    assert "Traceback" not in output
