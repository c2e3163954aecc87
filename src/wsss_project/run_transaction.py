"""Runs are atomic: a failed, interrupted or killed `kedro run` leaves `data/` as the previous
complete run left it, and "latest" of every versioned dataset still means that run.

How. A run-level journal, kept by :class:`RunTransactionHooks` (registered in ``settings.HOOKS``):

- ``before_pipeline_run``: take the run lock and roll back any journal a killed run left behind
  (before the other hooks read ``data/``), then, once kedro-mlflow has opened its run and every
  other hook has accepted the run, journal every file-backed output of the pipeline: the version
  folders present for a versioned dataset, and the previous file or folder of a non-versioned
  one, moved aside into ``data/.run_journal/<run id>/`` (one rename on the same filesystem; the
  run never reads the previous value of a dataset it produces). The journal (JSON) is written
  atomically before anything moves; a run another hook rejects creates nothing.
- ``after_pipeline_run``: drop the journal and the backups (the commit).
- ``on_pipeline_error``, and any error or interrupt in the other hooks: delete what the run wrote
  (new files, partitions, version folders), move the backups back, drop the journal, and end the
  MLflow run FAILED, or KILLED when interrupted.
- SIGINT and SIGTERM raise :class:`RunInterrupted` while the run writes: a ``KeyboardInterrupt``
  to the CLI and notebooks (``Aborted!``), and an ``Exception`` to Kedro's session, which then
  calls ``on_pipeline_error`` (it does not for a bare ``KeyboardInterrupt``).
- A run killed hard (SIGKILL, power loss) leaves its journal; the lock (``flock``, freed by the
  kernel when the process dies) tells a dead run's journal from a live one, so the next run rolls
  it back first, logs it, and marks its MLflow run KILLED. While a run holds the lock a second
  run is refused with a message naming it.

Why a journal rather than staging folders or one version folder per run: it needs no change to
the catalog or to any dataset (partitioned datasets keep ``overwrite: true`` and their paths,
versioned datasets keep Kedro's layout, so notebooks and Kedro-Viz read ``data/`` as before), it
covers datasets matched by factories and datasets added later without any declaration, and a
commit is one file deletion. Moving aside is used rather than copying wherever it is safe (a
folder is renamed in O(1)); a copy is made only where the run still reads the old content (a free
input inside an output's path), where a save adds to a folder instead of replacing it
(``overwrite: false``) or where the backup would cross filesystems.

Not covered: outputs on remote storage (logged as such), state outside the catalog (the embedding
cache, content-addressed and written atomically by its owner), MLflow metrics and artifacts (the
run's status says FAILED/KILLED), and savers in other processes (``ParallelRunner`` is covered
because every output is set aside before the run starts, in the main process).

State: the journal lives on disk; what one run holds in memory (its lock, its signal handlers)
lives on the hook instance for the duration of that run only, as kedro-mlflow's hook does.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import threading
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

import mlflow
from kedro.framework.hooks import hook_impl
from kedro.io import AbstractVersionedDataset, MemoryDataset
from kedro_datasets.partitions import PartitionedDataset
from mlflow.tracking import MlflowClient

from wsss_project.utils.atomic import write_bytes_atomic

try:  # POSIX; elsewhere a second concurrent run is not detected
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

logger = logging.getLogger(__name__)

JOURNAL_DIR = Path("data") / ".run_journal"  # relative to the project path
LOCK_FILE = "run.lock"
JOURNAL_SUFFIX = ".json"
JOURNAL_FORMAT = 1
LOCAL_PROTOCOLS = frozenset({"file", "local"})
INTERRUPT_SIGNALS = ("SIGINT", "SIGTERM")
MLFLOW_KILLED, MLFLOW_FAILED = "KILLED", "FAILED"
# A run found dead with its journal: MLflow may still show it RUNNING, or FINISHED (atexit).
MLFLOW_STATUSES_OF_DEAD_RUN = ("RUNNING", "FINISHED")


class RunInterrupted(KeyboardInterrupt, Exception):
    """SIGINT or SIGTERM during a run: an Exception for Kedro's session (so ``on_pipeline_error``
    runs and rolls back), a KeyboardInterrupt for everything above it."""


class RunTransactionError(Exception):
    """The run cannot start safely: another run is writing ``data/``, or a dead run's journal
    cannot be rolled back."""


@dataclass
class JournalEntry:
    """One output of the run and what ``data/`` held for it before the run."""

    dataset: str
    path: str  # absolute local path of the dataset's file or folder
    existed: bool
    created_from: str | None  # the highest missing ancestor of path, removed again on rollback
    versions: list[str] | None = None  # versioned: version folders present before the run
    backup: str | None = None  # non-versioned and existed: name of the backup in the run's folder
    copied: bool = False  # backup is a copy (path stays in place for the run) instead of a move


@dataclass
class RollbackCounts:
    """What a rollback did, for its log line."""

    restored: int = 0
    removed: int = 0
    versions_removed: int = 0
    errors: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (
            f"restored {self.restored} previous outputs, removed {self.removed} new ones "
            f"and {self.versions_removed} new versions"
        )


@dataclass
class RunJournal:
    """The on-disk journal of one run: ``<journal dir>/<run key>.json`` and its backups in
    ``<journal dir>/<run key>/``."""

    journal_dir: Path
    run_id: str
    pid: int
    started: str
    pipeline: str
    entries: list[JournalEntry]
    mlflow_run: dict[str, str] | None = None  # tracking_uri and run_id of the MLflow run

    @property
    def file(self) -> Path:
        return journal_file(self.journal_dir, self.run_id)

    @property
    def backup_dir(self) -> Path:
        return self.journal_dir / run_key(self.run_id)

    def save(self) -> None:
        record = {
            "format": JOURNAL_FORMAT, "run_id": self.run_id, "pid": self.pid, "started": self.started,
            "pipeline": self.pipeline, "mlflow_run": self.mlflow_run,
            "entries": [asdict(entry) for entry in self.entries],
        }
        _write_json_atomic(self.file, record)

    @classmethod
    def load(cls, file: Path) -> RunJournal:
        try:
            record = json.loads(file.read_text())
            if record.get("format") != JOURNAL_FORMAT:
                raise ValueError(f"format {record.get('format')!r}, expected {JOURNAL_FORMAT}")
            return cls(
                journal_dir=file.parent, run_id=record["run_id"], pid=record["pid"],
                started=record["started"], pipeline=record["pipeline"],
                entries=[JournalEntry(**entry) for entry in record["entries"]],
                mlflow_run=record.get("mlflow_run"),
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise RunTransactionError(
                f"Run journal {file} is unreadable ({err}); restore data/ from it by hand "
                f"(backups in {file.with_suffix('')}) and delete it"
            ) from err

    def set_aside(self) -> None:
        """Move (or copy) the previous outputs into the backup folder; the journal is on disk
        first, so a crash half-way is rolled back like any other."""
        self.save()
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        for entry in self.entries:
            if entry.backup is None:
                continue
            backup = self.backup_dir / entry.backup
            if entry.copied:
                staging = backup.with_name(backup.name + ".partial")
                _remove(staging)
                _copy(Path(entry.path), staging)
                shutil.move(staging, backup)  # a backup exists only once complete
            else:
                shutil.move(entry.path, backup)  # a rename: plan_journal checked the filesystem

    def roll_back(self) -> RollbackCounts:
        """Put back what ``data/`` held before the run. Idempotent: a rollback cut short (by a
        kill) is finished by the next run."""
        counts = RollbackCounts()
        for entry in self.entries:
            try:
                self._roll_back_entry(entry, counts)
            except OSError as err:
                counts.errors.append(f"{entry.dataset} ({entry.path}): {err}")
        if not counts.errors:
            self.drop()
        return counts

    def _roll_back_entry(self, entry: JournalEntry, counts: RollbackCounts) -> None:
        path = Path(entry.path)
        backup = self.backup_dir / entry.backup if entry.backup else None
        if entry.versions is not None and entry.existed:
            if path.is_dir():
                for version in sorted(set(os.listdir(path)) - set(entry.versions)):
                    _remove(path / version)
                    counts.versions_removed += 1
        elif backup is not None and backup.exists():
            _remove(path)
            _move(backup, path)
            counts.restored += 1
        elif not entry.existed and _lexists(path):
            _remove(path)
            counts.removed += 1
        # existed and no backup: never set aside (or already put back), so untouched
        if entry.created_from:
            _prune_empty(path.parent, Path(entry.created_from))

    def drop(self) -> None:
        """Forget the run: the journal first (the commit point), then the backups."""
        self.file.unlink(missing_ok=True)
        shutil.rmtree(self.backup_dir, ignore_errors=True)


def run_key(run_id: str) -> str:
    """The run id as a file name (Kedro's session ids are already safe; others may not be)."""
    return re.sub(r"[^\w.-]", "_", run_id)


def journal_file(journal_dir: Path, run_id: str) -> Path:
    return journal_dir / f"{run_key(run_id)}{JOURNAL_SUFFIX}"


def plan_journal(pipeline, catalog, journal_dir: Path) -> list[JournalEntry]:
    """A journal entry for every local file-backed output of ``pipeline``; nothing moves yet."""
    targets = {name: _local_target(name, catalog.get(name)) for name in sorted(pipeline.all_outputs())}
    targets = {name: target for name, target in targets.items() if target is not None}
    read_paths = [
        target[0] for target in (_local_target(name, catalog.get(name)) for name in pipeline.inputs())
        if target is not None
    ]
    # A target inside another non-versioned target is set aside with it.
    folders = [path for path, versioned, _ in targets.values() if not versioned]
    entries = []
    for index, (name, (path, versioned, replaced_whole)) in enumerate(targets.items()):
        if any(_is_within(path, folder) and path != folder for folder in folders):
            continue
        if any(entry.path == path for entry in entries):
            continue  # two names for one path
        existed = _lexists(Path(path))
        entry = JournalEntry(dataset=name, path=path, existed=existed, created_from=_highest_missing(Path(path)))
        if versioned:
            entry.versions = sorted(os.listdir(path)) if Path(path).is_dir() else []
        elif existed:
            entry.backup = f"{index}_{run_key(name)}"
            entry.copied = (
                not replaced_whole
                or any(_is_within(read, path) or _is_within(path, read) for read in read_paths)
                or not _same_filesystem(Path(path), journal_dir)
            )
        entries.append(entry)
    return entries


def _local_target(name: str, dataset: Any) -> tuple[str, bool, bool] | None:
    """(absolute path, versioned, a save replaces it whole) of a local file-backed dataset;
    None for datasets that hold no file (memory, MLflow metrics, parameters)."""
    if dataset is None or isinstance(dataset, MemoryDataset):
        return None
    if isinstance(dataset, PartitionedDataset):
        raw, protocol = str(dataset._path), dataset._protocol
        versioned, replaced_whole = False, bool(dataset._overwrite)
    elif hasattr(dataset, "_filepath"):  # kedro-datasets and project datasets, also wrapped by MLflow
        raw, protocol = str(dataset._filepath), getattr(dataset, "_protocol", "file")
        versioned = isinstance(dataset, AbstractVersionedDataset) and dataset._version is not None
        replaced_whole = versioned or not Path(raw).is_dir()  # an unknown folder dataset may add files
    else:
        return None
    if protocol not in LOCAL_PROTOCOLS:
        logger.warning("Dataset %s is on %s storage: a failed run may leave it changed", name, protocol)
        return None
    return os.path.abspath(raw.removeprefix("file://")), versioned, replaced_whole


class RunLock:
    """An exclusive ``flock`` on ``<journal dir>/run.lock`` held for one run; the kernel frees it
    when the process dies, however it dies."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    @classmethod
    def acquire(cls, journal_dir: Path, run_id: str) -> RunLock:
        journal_dir.mkdir(parents=True, exist_ok=True)
        path = journal_dir / LOCK_FILE
        if fcntl is None:  # pragma: no cover
            return cls(None)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _read_text(path) or "unknown"
            raise RunTransactionError(
                f"Another kedro run is writing {journal_dir.parent} ({holder}); wait for it to "
                f"finish or stop it (Ctrl-C rolls it back), then run again"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, run {run_id}, started {_now()}".encode())
        return cls(fd)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing frees the flock
            self.fd = None


class InterruptGuard:
    """While installed, SIGINT/SIGTERM raise :class:`RunInterrupted` (mode "raise") or are
    noted and ignored (mode "defer", while data/ is being committed or rolled back)."""

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}
        self.mode = "raise"
        self.received: str | None = None

    def install(self) -> InterruptGuard:
        if threading.current_thread() is not threading.main_thread():
            return self  # Python delivers signals to the main thread only
        for name in INTERRUPT_SIGNALS:
            number = getattr(signal, name, None)
            if number is None:  # pragma: no cover
                continue
            default = signal.default_int_handler if name == "SIGINT" else signal.SIG_DFL
            previous = signal.getsignal(number)
            while isinstance(previous, InterruptGuard):  # a guard a dead session left installed
                previous = previous.previous.get(number, default)
            self.previous[number] = default if previous is None else previous  # None: set outside Python
            signal.signal(number, self)
        return self

    def __call__(self, number: int, frame: Any) -> None:
        name = signal.Signals(number).name
        if self.mode == "defer":
            logger.warning("%s received while data/ is being restored or committed: finishing that first", name)
            self.received = self.received or name
            return
        self.received = name
        raise RunInterrupted(f"{name}: run interrupted")

    def raise_if_swallowed(self) -> None:
        """An interrupt caught by a node's ``except Exception`` still stops the run."""
        if self.received and self.mode == "raise":
            raise RunInterrupted(f"{self.received}: run interrupted")

    def restore(self) -> None:
        for number, previous in self.previous.items():
            if signal.getsignal(number) is self:
                signal.signal(number, previous)
        self.previous = {}


@dataclass
class OpenRun:
    """What one run holds in memory between its hooks."""

    run_id: str
    journal_dir: Path
    lock: RunLock | None  # taken at once when data/ has a journal folder, else once the run is accepted
    guard: InterruptGuard
    owns_mlflow_run: bool  # False when an orchestrator opened the MLflow run: it ends it too
    journal: RunJournal | None = None


class RunTransactionHooks:
    """Makes every `kedro run` all-or-nothing on ``data/`` (see the module docstring)."""

    def __init__(self) -> None:
        self._open: OpenRun | None = None

    @hook_impl(tryfirst=True)  # before kedro-mlflow looks for an active MLflow run to reuse
    def after_context_created(self) -> None:
        self._roll_back_leftover_run()

    @hook_impl(wrapper=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> Generator[None, Any, Any]:
        self._roll_back_leftover_run()
        run_id = run_params["run_id"]
        journal_dir = Path(run_params["project_path"]) / JOURNAL_DIR
        # A dead run's journal is rolled back before the other hooks read data/; a project without
        # a journal folder has none, and gets one only once the run is accepted.
        lock = _lock_and_recover(journal_dir, run_id) if journal_dir.is_dir() else None
        self._open = OpenRun(
            run_id, journal_dir, lock, InterruptGuard().install(), owns_mlflow_run=mlflow.active_run() is None
        )
        try:
            result = yield  # kedro-mlflow opens its run, other hooks check the run
            if self._open.lock is None:
                self._open.lock = _lock_and_recover(journal_dir, run_id)
            journal = RunJournal(
                journal_dir=journal_dir, run_id=run_id, pid=os.getpid(), started=_now(),
                pipeline="+".join(run_params.get("pipeline_names") or ["__default__"]),
                entries=plan_journal(pipeline, catalog, journal_dir),
                mlflow_run=_active_mlflow_run() if self._open.owns_mlflow_run else None,
            )
            self._open.journal = journal
            journal.set_aside()
            return result
        except BaseException as error:
            self._fail(error)

    @hook_impl
    def before_node_run(self) -> None:
        if self._open is not None:
            self._open.guard.raise_if_swallowed()

    @hook_impl
    def after_node_run(self) -> None:
        if self._open is not None:
            self._open.guard.raise_if_swallowed()

    @hook_impl(wrapper=True)
    def after_pipeline_run(self) -> Generator[None, Any, Any]:
        try:
            result = yield  # kedro-mlflow ends its run FINISHED
        except BaseException as error:
            self._fail(error)
        self._commit()
        return result

    @hook_impl(wrapper=True)
    def on_pipeline_error(self, error: Exception) -> Generator[None, Any, Any]:
        try:
            result = yield  # kedro-mlflow ends its run FAILED
        finally:
            interrupt = self._abort(error)
        if interrupt is not None and not isinstance(error, KeyboardInterrupt):
            # A dataset wrapped the interrupt in a DatasetError: show the user an interrupt.
            raise RunInterrupted(f"{interrupt}: run interrupted") from error
        return result

    def _commit(self) -> None:
        run = self._open
        if run is None:
            return
        run.guard.mode = "defer"
        try:
            if run.journal is not None:
                run.journal.drop()
                entries = run.journal.entries
                logger.info(
                    "Run %s committed: %d outputs (%d replaced, %d versioned)", run.run_id, len(entries),
                    sum(e.backup is not None for e in entries), sum(e.versions is not None for e in entries),
                )
                _leave_mlflow_run(run.journal.mlflow_run)
        finally:
            self._close(run)

    def _fail(self, error: BaseException) -> NoReturn:
        """Abort the run and re-raise, as an interrupt if it was one."""
        interrupt = self._abort(error)
        if interrupt is not None and not isinstance(error, KeyboardInterrupt):
            raise RunInterrupted(f"{interrupt}: run interrupted") from error
        raise error

    def _abort(self, error: BaseException | None) -> str | None:
        """Roll back the open run and end its MLflow run FAILED, or KILLED when interrupted
        (also when a dataset wrapped the interrupt in its own error) or when it ended unseen
        (``error`` None). Returns the interrupt."""
        run = self._open
        if run is None:
            return None
        run.guard.mode = "defer"
        interrupt = run.guard.received or (type(error).__name__ if isinstance(error, KeyboardInterrupt) else None)
        if interrupt:
            cause, status = f"was interrupted ({interrupt})", MLFLOW_KILLED
        elif error is None:
            cause, status = "ended without Kedro's closing hooks (an exception Kedro does not catch)", MLFLOW_KILLED
        else:
            cause, status = f"failed ({type(error).__name__})", MLFLOW_FAILED
        try:
            journal = run.journal
            if journal is None and journal_file(run.journal_dir, run.run_id).exists():
                journal = RunJournal.load(journal_file(run.journal_dir, run.run_id))
            if journal is not None:
                _log_rollback(f"Run {run.run_id} {cause}", journal.roll_back(), journal.file)
            if journal is not None:
                _end_mlflow_run(journal.mlflow_run, status)
            elif run.owns_mlflow_run:
                _end_mlflow_run(_active_mlflow_run(), status)
        finally:
            self._close(run)
        return interrupt

    def _close(self, run: OpenRun) -> None:
        run.guard.restore()
        if run.lock is not None:
            run.lock.release()
        self._open = None

    def _roll_back_leftover_run(self) -> None:
        """A previous run in this process ended without Kedro's closing hooks (a SystemExit
        from a node, an interrupt between hooks): it still holds the lock, so it is ours to roll
        back, and its MLflow run is still active here, so it is ended before kedro-mlflow would
        reuse it for the next run."""
        if self._open is not None:
            self._abort(None)


def _lock_and_recover(journal_dir: Path, run_id: str) -> RunLock:
    """Take the run lock, then roll back what dead runs left."""
    lock = RunLock.acquire(journal_dir, run_id)
    try:
        roll_back_dead_runs(journal_dir)
    except BaseException:
        lock.release()
        raise
    return lock


def roll_back_dead_runs(journal_dir: Path) -> None:
    """Roll back every journal in ``journal_dir`` (the caller holds the lock, so their runs are
    dead), drop backups left without a journal, and mark the dead runs KILLED in MLflow."""
    for file in sorted(journal_dir.glob(f"*{JOURNAL_SUFFIX}")):
        journal = RunJournal.load(file)
        counts = journal.roll_back()
        _log_rollback(
            f"Run {journal.run_id} (pid {journal.pid}, started {journal.started}) ended without "
            f"finishing (killed or crashed)", counts, file,
        )
        if counts.errors:
            raise RunTransactionError(
                f"The journal {file} of a dead run could not be rolled back ({'; '.join(counts.errors)}); "
                f"fix the paths named and run again"
            )
        _end_mlflow_run(journal.mlflow_run, MLFLOW_KILLED, only_if=MLFLOW_STATUSES_OF_DEAD_RUN)
    for orphan in journal_dir.iterdir():
        if orphan.is_dir() and not (orphan.parent / f"{orphan.name}{JOURNAL_SUFFIX}").exists():
            logger.info("Removing %s: backups of a run that had committed", orphan)
            shutil.rmtree(orphan, ignore_errors=True)


def _log_rollback(what: str, counts: RollbackCounts, file: Path) -> None:
    if counts.errors:
        logger.error(
            "%s: rollback incomplete, %s; kept %s for the next run to finish: %s",
            what, counts.describe(), file, "; ".join(counts.errors),
        )
    else:
        logger.warning("%s: rolled back, %s; data/ is as the previous complete run left it", what, counts.describe())


def _active_mlflow_run() -> dict[str, str] | None:
    active = mlflow.active_run()
    if active is None:
        return None
    return {"tracking_uri": mlflow.get_tracking_uri(), "run_id": active.info.run_id}


def _end_mlflow_run(mlflow_run: dict[str, str] | None, status: str, only_if: tuple[str, ...] | None = None) -> None:
    """End (or re-mark) a run's MLflow run with ``status``; a tracking error is logged, not raised,
    so it never hides the run's own error."""
    if mlflow_run is None:
        return
    try:
        client = MlflowClient(tracking_uri=mlflow_run["tracking_uri"])
        current = client.get_run(mlflow_run["run_id"]).info.status
        if current == status or (only_if is not None and current not in only_if):
            return
        client.set_terminated(mlflow_run["run_id"], status)
        _leave_mlflow_run(mlflow_run)
        logger.info("MLflow run %s marked %s (was %s)", mlflow_run["run_id"], status, current)
    except Exception as err:  # noqa: BLE001 - reporting must not mask the run's error
        logger.warning("Could not mark MLflow run %s %s: %s", mlflow_run["run_id"], status, err)


def _leave_mlflow_run(mlflow_run: dict[str, str] | None) -> None:
    """kedro-mlflow re-enters its run at every node and ends it once: leave the copies still on
    this process's active-run stack, or the next session here would log into the ended run."""
    if mlflow_run is None:
        return
    while (active := mlflow.active_run()) is not None and active.info.run_id == mlflow_run["run_id"]:
        mlflow.end_run(mlflow.get_run(active.info.run_id).info.status)


def _write_json_atomic(path: Path, record: dict) -> None:
    """Write the journal through the one atomic-write helper, then sync the folder (the rename)."""
    write_bytes_atomic(path, json.dumps(record, indent=2).encode())
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - folders cannot be opened on Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lexists(path: Path) -> bool:
    return os.path.lexists(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif _lexists(path):
        path.unlink()


def _move(source: Path, target: Path) -> None:
    """A rename, or copy-then-delete across filesystems (rollback stays idempotent)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(source, target)


def _copy(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True)
    else:
        shutil.copy2(source, target)


def _highest_missing(path: Path) -> str | None:
    """The highest ancestor-or-self of ``path`` that does not exist yet."""
    missing = None
    for candidate in (path, *path.parents):
        if _lexists(candidate):
            break
        missing = candidate
    return str(missing) if missing is not None else None


def _prune_empty(folder: Path, up_to: Path) -> None:
    """Remove the empty folders from ``folder`` up to ``up_to`` that the run created."""
    for candidate in (folder, *folder.parents):
        if not _is_within(str(candidate), str(up_to)):
            return
        try:
            candidate.rmdir()
        except OSError:
            return


def _is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _same_filesystem(path: Path, journal_dir: Path) -> bool:
    existing = next(candidate for candidate in (path, *path.parents) if candidate.exists())
    return existing.stat().st_dev == journal_dir.stat().st_dev


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
