"""Atomic file writes: the one place that writes a file through a temporary file and a rename.

A reader (or the next run, after a crash or Ctrl-C) sees either the old complete file or the new
complete file, never a half-written one: the data goes to a hidden temporary file in the target's
own folder (so the rename never crosses a filesystem), is flushed to disk with ``fsync``, and is
moved over the target with ``os.replace`` (atomic on POSIX and Windows). On any error, the
temporary file is removed and the target is left as it was.

The temporary name ends in ``.tmp``, so a partitioned dataset that lists ``*.png`` never takes a
leftover for a partition.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_SUFFIX = ".tmp"
_NEW_FILE_MODE = 0o666  # narrowed by the umask, as for any file the process creates


def temporary_path_for(path: Path) -> Path:
    """A fresh hidden name beside ``path``: ``.<name>.<random>.tmp``."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")


def _fsync_file(path: Path) -> None:
    """Flush a closed file's data to disk (opened read-write: Windows refuses fsync otherwise)."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; move it into place on success.

    Example::

        with atomic_path(target) as tmp:
            torch.save(state_dict, tmp)

    The temporary file exists (empty) when the block starts, in ``path``'s folder (created if
    missing). If the block raises (``KeyboardInterrupt`` included), the temporary file is deleted,
    ``path`` keeps its old content, and the exception propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path_for(path)
    # O_EXCL: never reuse a name another writer holds; mode 0o666 & ~umask like a plain open()
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _NEW_FILE_MODE))
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
