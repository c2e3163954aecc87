"""On-disk cache of image embeddings (:class:`ImageState`), shared by every threshold and mode.

Layout: ``<directory>/<model_key[:16]>/<entry_key>.npz`` where ``entry_key`` is the sha256 of the
tile's bytes, shape and dtype and of the full ``model_key``. Files are written to a temporary file
in the same folder and moved into place with ``os.replace`` (atomic on POSIX and Windows), so a
crash or a concurrent writer never leaves a half-written entry. Only the current entry is in
memory.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .base import ImageState

logger = logging.getLogger(__name__)

_READ_CHUNK_BYTES = 1 << 20
_MODEL_DIR_CHARS = 16


def checkpoint_fingerprint(path: str | Path, model_type: str) -> str:
    """sha256 of a checkpoint file's content (streamed) and the model type: a SAM ``model_key``.

    Hashing a 375 MB vit_b takes about a second; within a process the digest is reused while the
    file's size and modification time are unchanged (every sweep namespace asks for it).
    """
    stat = Path(path).stat()
    return _hash_checkpoint(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, model_type)


@functools.lru_cache(maxsize=8)
def _hash_checkpoint(path: str, size: int, mtime_ns: int, model_type: str) -> str:
    digest = hashlib.sha256()
    digest.update(f"sam:{model_type}:".encode())
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_READ_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def params_fingerprint(backend: str, params: dict[str, Any]) -> str:
    """sha256 of a weight-free backend's name and parameters: its ``model_key``."""
    text = json.dumps({"backend": backend, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def image_key(image: np.ndarray, model_key: str) -> str:
    """sha256 of an image's bytes, shape and dtype together with the model key."""
    image = np.ascontiguousarray(image)
    digest = hashlib.sha256()
    digest.update(model_key.encode())
    digest.update(str(image.shape).encode())
    digest.update(str(image.dtype).encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


class EmbeddingCache:
    """Persisted :class:`ImageState` per (image, model); counts ``hits`` and ``misses``.

    Args:
        directory: root folder of the cache (created if missing).
        model_key: identifies the model that computes the states, e.g.
            :func:`checkpoint_fingerprint` or :func:`params_fingerprint`.
    """

    def __init__(self, directory: str | Path, model_key: str) -> None:
        if not model_key:
            raise ValueError("model_key must be a non-empty string")
        self.model_key = model_key
        self.directory = Path(directory) / model_key[:_MODEL_DIR_CHARS]
        self.hits = 0
        self.misses = 0

    def path_for(self, image: np.ndarray) -> Path:
        """Where the state of ``image`` is (or would be) stored."""
        return self.directory / f"{image_key(image, self.model_key)}.npz"

    def get_or_compute(
        self, image: np.ndarray, compute_fn: Callable[[np.ndarray], ImageState]
    ) -> ImageState:
        """Return the cached state of ``image``, or compute it with ``compute_fn`` and store it."""
        path = self.path_for(image)
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as stored:
                    state = ImageState.from_npz_dict(stored)
                self.hits += 1
                return state
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
                logger.warning("Unreadable embedding cache entry %s (%s): recomputing", path, err)
        self.misses += 1
        state = compute_fn(image)
        self._write(path, state)
        return state

    def _write(self, path: Path, state: ImageState) -> None:
        """Write ``state`` to ``path`` atomically (temporary file + ``os.replace``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as tmp_file:
                np.savez(tmp_file, **state.to_npz_dict())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
