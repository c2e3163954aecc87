"""Runs are atomic: a run that fails in any stage, is interrupted (Ctrl-C) or is killed leaves
data/ byte-identical to the previous complete run, "latest" still that run, and MLflow says
FAILED or KILLED."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from kedro.framework.hooks import hook_impl
from kedro.framework.project import settings
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import MemoryDataset
from kedro_datasets.matplotlib import MatplotlibDataset
from kedro_datasets.partitions import PartitionedDataset
from project_files import copy_project
from test_run import TINY_PARAMS

import wsss_project
from wsss_project.datasets import OptionalPartitionedDataset
from wsss_project.datasets.png_array import read_png
from wsss_project.run_transaction import (
    JOURNAL_DIR,
    LOCK_FILE,
    InterruptGuard,
    JournalEntry,
    RunInterrupted,
    RunJournal,
    RunLock,
    RunTransactionError,
)

STAGES = (
    "data_preparation", "localization", "prompt_generation", "sam_labeling",
    "segmentation_training", "supervised_reference", "evaluation",
)
# Another seed: other scenes, so every output of the failed run differs from the baseline's.
OTHER_RUN_PARAMS = {**TINY_PARAMS, "seed": 7}
CACHES = ("04_feature/embeddings",)  # content-addressed, outside the catalog
VERSIONED = (
    "02_intermediate/scenes.parquet", "02_intermediate/tile_index.parquet", "06_models/cam_model.pt",
    "06_models/segmentation_model.pt", "06_models/supervised_model.pt", "08_reporting/metrics.json",
)
SOURCE_DIR = Path(wsss_project.__file__).resolve().parents[1]
# Generous bounds so a stuck subprocess fails the test instead of hanging it; no timing is asserted.
SUBPROCESS_DEADLINE_S = 600
POLL_S = 0.02


class StageFailed(RuntimeError):
    """The failure injected into a stage."""


def _own_mlflow_db(project: Path) -> None:
    """An absolute tracking URI: MLflow caches its store by URI, so the relative default would
    send a second in-process session to the first project's mlflow.db."""
    (project / "conf" / "local" / "mlflow.yml").write_text(
        f"server:\n  mlflow_tracking_uri: sqlite:///{project / 'mlflow.db'}\n"
    )


def _run(project: Path, params: dict, pipeline_names: list[str] | None = None, extra_hooks: tuple = ()) -> None:
    bootstrap_project(project)
    hooks = settings.HOOKS
    settings.HOOKS = (*hooks, *extra_hooks)
    try:
        with KedroSession.create(project_path=project, runtime_params=params) as session:
            session.run(pipeline_names=pipeline_names)
    finally:
        settings.HOOKS = hooks


def _data_state(project: Path) -> dict[str, str]:
    """sha256 of every file under data/, caches and the run journal aside."""
    data = project / "data"
    return {
        str(path.relative_to(data)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(data.rglob("*"))
        if path.is_file()
        and not any(str(path.relative_to(data)).startswith(cache) for cache in CACHES)
        and JOURNAL_DIR.name not in path.parts
    }


def _latest_versions(project: Path) -> dict[str, str]:
    return {name: max(os.listdir(project / "data" / name)) for name in VERSIONED}


def _journal_left(project: Path) -> list[str]:
    """What the run journal folder holds besides its lock file."""
    folder = project / JOURNAL_DIR
    return sorted(name for name in os.listdir(folder) if name != LOCK_FILE) if folder.is_dir() else []


def _mlflow_statuses(project: Path) -> dict[str, str]:
    """Kedro run id -> MLflow status of every run in the project's mlflow.db."""
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["wsss_project"], output_format="list")
    return {run.data.tags["run_id"]: run.info.status for run in runs}


class FailOnceStageSaved:
    """Raises once every output of a stage is saved (as a failing save would), after recording
    data/: the hardest point to roll back from, everything of the stage and before it written."""

    def __init__(self, stage: str, project: Path, error: type[BaseException] = StageFailed) -> None:
        self.stage, self.project, self.error = stage, project, error
        self.outputs = importlib.import_module(f"wsss_project.pipelines.{stage}").create_pipeline().all_outputs()
        self.saved: set[str] = set()
        self.data_at_failure: dict[str, str] | None = None

    @hook_impl
    def after_dataset_saved(self, dataset_name: str) -> None:
        self.saved.add(dataset_name)
        if self.outputs <= self.saved:
            self.data_at_failure = _data_state(self.project)
            raise self.error(f"injected failure once {self.stage} saved its outputs")


def _assert_outputs_load(project: Path) -> None:
    """Every file-backed dataset the baseline wrote loads, every partition included."""
    bootstrap_project(project)
    with KedroSession.create(project_path=project) as session:
        catalog = session.load_context().catalog
        loaded = []
        for name in catalog.keys():
            dataset = catalog.get(name)
            if isinstance(dataset, MemoryDataset) or not (hasattr(dataset, "_filepath") or isinstance(dataset, PartitionedDataset)):
                continue
            if not catalog.exists(name):
                continue  # threshold_sweep outputs: the baseline ran __default__
            if isinstance(dataset, MatplotlibDataset):  # a figure: saved, never loaded by Kedro
                assert read_png(Path(str(dataset._filepath))).size, name
                loaded.append(name)
                continue
            data = catalog.load(name)
            if isinstance(dataset, PartitionedDataset):
                # Optional partitions (the ALPS cluster maps) are empty in a run without ALPS.
                assert data or isinstance(dataset, OptionalPartitionedDataset), name
                for load_partition in data.values():
                    load_partition()
            loaded.append(name)
    assert {"tiles", "tile_index", "cam_model", "pseudo_masks", "predictions", "metrics", "stage_comparison_figure"} <= set(loaded)


@dataclass(frozen=True)
class Baseline:
    project: Path
    mlflow_run_left_active: str | None  # in this process, after the run


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Baseline:
    """One complete default run on the tiny config: the 'previous complete run' of every test."""
    project = copy_project(tmp_path_factory.mktemp("baseline"))
    _own_mlflow_db(project)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        _run(project, TINY_PARAMS)
    left_active = mlflow.active_run()
    while mlflow.active_run():  # isolate the other tests from a run left open (see its own test)
        mlflow.end_run()
    return Baseline(project, left_active and left_active.info.run_id)


def test_a_complete_run_leaves_no_mlflow_run_active_in_the_process(baseline):
    """kedro-mlflow re-enters its run at every node and ends it once: a second session in the same
    process (a notebook, these tests) would log into the finished run."""
    assert baseline.mlflow_run_left_active is None


@pytest.fixture
def project(baseline, project_copy) -> Path:
    """A project whose data/ and mlflow.db are the baseline's."""
    shutil.copytree(baseline.project / "data", project_copy / "data")
    shutil.copy(baseline.project / "mlflow.db", project_copy / "mlflow.db")
    _own_mlflow_db(project_copy)
    assert _journal_left(project_copy) == []
    return project_copy


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_a_run_failing_in_any_stage_leaves_the_previous_run_intact(project, caplog, stage):
    before, latest = _data_state(project), _latest_versions(project)
    (baseline_run,) = _mlflow_statuses(project)
    failure = FailOnceStageSaved(stage, project)

    with pytest.raises(StageFailed):
        _run(project, OTHER_RUN_PARAMS, extra_hooks=(failure,))

    assert failure.data_at_failure not in (None, before), "the failed run had not changed data/"
    assert _data_state(project) == before
    assert _latest_versions(project) == latest
    assert _journal_left(project) == []
    _assert_outputs_load(project)
    statuses = _mlflow_statuses(project)
    assert statuses.pop(baseline_run) == "FINISHED"
    assert list(statuses.values()) == ["FAILED"]
    assert "failed (StageFailed): rolled back" in caplog.text


def _kedro_run_subprocess(project: Path, params: dict) -> subprocess.Popen:
    """`kedro run` in its own process, importing this checkout's package."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SOURCE_DIR), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-m", "kedro", "run", "--params", _cli_params(params)],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _cli_params(params: dict, prefix: str = "") -> str:
    """TINY_PARAMS as `kedro run --params` text: dotted keys, comma separated."""
    items = []
    for key, value in params.items():
        if isinstance(value, dict):
            items.append(_cli_params(value, f"{prefix}{key}."))
        else:
            items.append(f"{prefix}{key}={value}")
    return ",".join(items)


def _wait_for(process: subprocess.Popen, condition) -> None:
    deadline = time.monotonic() + SUBPROCESS_DEADLINE_S
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"kedro run ended before the signal:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("kedro run did not reach the point to signal")
        time.sleep(POLL_S)


def _labelling_has_begun(project: Path, since: float):
    """True once the run has saved its first pseudo-mask (copied baseline files are older)."""
    folder = project / "data" / "04_feature" / "pseudo_masks"

    def saved_one() -> bool:
        try:
            return any(path.stat().st_mtime >= since for path in folder.glob("*.png"))
        except FileNotFoundError:  # set aside, or replaced, while we look
            return False

    return saved_one


@pytest.mark.slow
def test_ctrl_c_once_labelling_has_begun_restores_the_previous_run_and_mlflow_says_killed(project):
    before, latest = _data_state(project), _latest_versions(project)
    (baseline_run,) = _mlflow_statuses(project)
    started = time.time()
    process = _kedro_run_subprocess(project, OTHER_RUN_PARAMS)
    _wait_for(process, _labelling_has_begun(project, started))
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=SUBPROCESS_DEADLINE_S)

    assert process.returncode != 0, output
    assert _data_state(project) == before
    assert _latest_versions(project) == latest
    assert _journal_left(project) == []
    statuses = _mlflow_statuses(project)
    assert statuses.pop(baseline_run) == "FINISHED"
    assert list(statuses.values()) == ["KILLED"]
    assert "was interrupted (SIGINT): rolled back" in output, output
    assert output.rstrip().endswith("Aborted!")  # the CLI shows an interrupt, not a traceback


@pytest.mark.slow
def test_a_run_killed_hard_is_rolled_back_by_the_next_run(project, caplog):
    before, latest = _data_state(project), _latest_versions(project)
    (baseline_run,) = _mlflow_statuses(project)
    started = time.time()
    process = _kedro_run_subprocess(project, OTHER_RUN_PARAMS)
    _wait_for(process, _labelling_has_begun(project, started))
    process.kill()  # SIGKILL: no hook, no handler, no atexit
    process.wait()
    assert _data_state(project) != before  # mixed: new tiles and CAMs, no predictions
    journal_left_by_kill = _journal_left(project)

    # The next run, which itself fails after data preparation, first rolls the dead run back.
    with pytest.raises(StageFailed):
        _run(project, OTHER_RUN_PARAMS, ["data_preparation"], (FailOnceStageSaved("data_preparation", project),))

    assert _data_state(project) == before
    assert _latest_versions(project) == latest
    assert len(journal_left_by_kill) == 2  # <run>.json and <run>/ (the backups)
    assert _journal_left(project) == []
    statuses = _mlflow_statuses(project)
    assert statuses.pop(baseline_run) == "FINISHED"
    assert sorted(statuses.values()) == ["FAILED", "KILLED"]  # the next run failed, the dead one killed
    assert "ended without finishing (killed or crashed): rolled back" in caplog.text


@pytest.mark.slow
def test_a_run_ending_past_kedro_s_error_hook_is_rolled_back_by_the_next_session(project, caplog):
    """SystemExit from a node is no Exception: Kedro calls no error hook and the run stays open in
    this process (lock, signal handlers, MLflow run); the next session rolls it back first."""
    before, latest = _data_state(project), _latest_versions(project)
    (baseline_run,) = _mlflow_statuses(project)
    with pytest.raises(SystemExit):
        _run(project, OTHER_RUN_PARAMS, ["data_preparation"], (FailOnceStageSaved("data_preparation", project, SystemExit),))
    assert _data_state(project) != before  # left mixed: new tiles, the baseline's in the journal

    with pytest.raises(StageFailed):
        _run(project, OTHER_RUN_PARAMS, ["data_preparation"], (FailOnceStageSaved("data_preparation", project),))

    assert _data_state(project) == before
    assert _latest_versions(project) == latest
    assert _journal_left(project) == []
    statuses = _mlflow_statuses(project)
    assert statuses.pop(baseline_run) == "FINISHED"
    assert sorted(statuses.values()) == ["FAILED", "KILLED"]  # each run its own, the exited one killed
    assert "ended without Kedro's closing hooks (an exception Kedro does not catch): rolled back" in caplog.text


class RejectRun:
    """Another project hook refusing the run (as parameter validation does)."""

    @hook_impl
    def before_pipeline_run(self) -> None:
        raise StageFailed("rejected before any node")


@pytest.mark.slow
def test_a_run_another_hook_rejects_creates_nothing_and_its_mlflow_run_failed(project_copy):
    _own_mlflow_db(project_copy)
    with pytest.raises(StageFailed):
        _run(project_copy, TINY_PARAMS, extra_hooks=(RejectRun(),))
    assert not (project_copy / "data").exists()
    assert list(_mlflow_statuses(project_copy).values()) == ["FAILED"]  # kedro-mlflow had opened it
    assert mlflow.active_run() is None


def test_a_second_run_is_refused_while_one_holds_the_lock(tmp_path):
    journal_dir = tmp_path / JOURNAL_DIR
    first = RunLock.acquire(journal_dir, "first")
    try:
        with pytest.raises(RunTransactionError, match=r"Another kedro run .*run first"):
            RunLock.acquire(journal_dir, "second")
    finally:
        first.release()
    RunLock.acquire(journal_dir, "third").release()  # free again once released


def test_a_rollback_cut_short_is_finished_by_the_next_one(tmp_path):
    """Files and folders are moved back, new versions and new outputs removed, created folders
    pruned; a rollback killed half-way (a backup restored, another not) completes on a rerun."""
    data = tmp_path / "data"
    (data / "folder").mkdir(parents=True)
    (data / "folder" / "a.png").write_bytes(b"old a")
    (data / "file.json").write_text("old")
    (data / "model.pt" / "v1").mkdir(parents=True)
    (data / "model.pt" / "v1" / "model.pt").write_bytes(b"v1")
    before = _tree(data)
    journal = RunJournal(
        journal_dir=data / ".run_journal", run_id="2026-01-01T00.00.00.000Z", pid=0, started="", pipeline="p",
        entries=[
            JournalEntry("folder", str(data / "folder"), True, None, backup="0_folder"),
            JournalEntry("file", str(data / "file.json"), True, None, backup="1_file", copied=True),
            JournalEntry("model", str(data / "model.pt"), True, None, versions=["v1"]),
            JournalEntry("new", str(data / "new" / "deep" / "out.csv"), False, str(data / "new")),
        ],
    )
    journal.set_aside()
    assert not (data / "folder").exists() and (data / "file.json").read_text() == "old"  # moved, copied
    (data / "folder").mkdir()
    (data / "folder" / "b.png").write_bytes(b"new b")
    (data / "file.json").write_text("new")
    (data / "model.pt" / "v2").mkdir()
    (data / "new" / "deep").mkdir(parents=True)
    (data / "new" / "deep" / "out.csv").write_text("new")

    # Killed half-way through a rollback: the folder is back, the rest is not.
    shutil.rmtree(data / "folder")
    os.replace(journal.backup_dir / "0_folder", data / "folder")
    counts = RunJournal.load(journal.file).roll_back()

    assert (counts.restored, counts.removed, counts.versions_removed, counts.errors) == (1, 1, 1, [])
    assert _tree(data) == before
    assert not journal.file.exists() and not journal.backup_dir.exists()


def _tree(folder: Path) -> dict[str, bytes | None]:
    return {
        str(path.relative_to(folder)): path.read_bytes() if path.is_file() else None
        for path in sorted(folder.rglob("*")) if ".run_journal" not in path.parts
    }


def test_interrupt_guard_turns_ctrl_c_into_an_exception_kedro_rolls_back_and_restores_the_handler():
    previous, previous_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    guard = InterruptGuard().install()
    try:
        with pytest.raises(Exception) as caught:  # what Kedro's session catches
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs at the next bytecode; never reached
        assert isinstance(caught.value, RunInterrupted) and isinstance(caught.value, KeyboardInterrupt)
        with pytest.raises(RunInterrupted, match="SIGTERM"):  # `kill`, CI cancellations, docker stop
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        guard.mode = "defer"  # while committing or rolling back, a second Ctrl-C waits (no raise)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0)
    finally:
        guard.restore()
    assert signal.getsignal(signal.SIGINT) is previous and signal.getsignal(signal.SIGTERM) is previous_term


def test_the_journal_is_json_naming_every_output(tmp_path):
    journal = RunJournal(
        journal_dir=tmp_path, run_id="r", pid=1, started="t", pipeline="p",
        entries=[JournalEntry("tiles", str(tmp_path / "tiles"), False, str(tmp_path / "tiles"))],
    )
    journal.save()
    record = json.loads(journal.file.read_text())
    assert [entry["dataset"] for entry in record["entries"]] == ["tiles"]
    assert RunJournal.load(journal.file) == journal
