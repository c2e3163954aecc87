"""On-disk cache of image embeddings (:class:`ImageState`), shared by every threshold and mode.

Layout: ``<directory>/<model_key[:16]>/<entry_key>.npz`` where ``entry_key`` is the sha256 of the
tile's bytes, shape and dtype and of the full ``model_key`` (utils/fingerprint.py). Entries are
written atomically (utils/atomic.py), so a crash or a concurrent writer never leaves a
half-written entry. Only the current entry is in memory.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from wsss_project.utils.atomic import atomic_path

from wsss_project.utils.fingerprint import array_fingerprint

from .base import ImageState

logger = logging.getLogger(__name__)

_MODEL_DIR_CHARS = 16


class EmbeddingCache:
    """Persisted :class:`ImageState` per (image, model); counts ``hits`` and ``misses``.

    Args:
        directory: root folder of the cache (created if missing).
        model_key: identifies the model that computes the states, e.g.
            :func:`~wsss_project.utils.fingerprint.checkpoint_fingerprint` or ``params_fingerprint``.
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
        return self.directory / f"{array_fingerprint(image, salt=self.model_key)}.npz"

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
        # a file handle, not a path: np.savez would append ".npz" to the temporary name
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **state.to_npz_dict())
