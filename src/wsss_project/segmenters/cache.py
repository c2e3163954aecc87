"""On-disk cache of image embeddings (:class:`ImageState`), shared by every threshold and mode.

Layout: ``<directory>/<model_key[:16]>/<entry_key>.npz`` where ``entry_key`` is the sha256 of the
tile's bytes, shape and dtype and of the full ``model_key`` (utils/fingerprint.py). Entries are
written atomically (utils/atomic.py), so a crash or a concurrent writer never leaves a
half-written entry. Only the current entry is in memory.

``<directory>/<model_key[:16]>/layout.json`` records, per image shape, the array shapes and dtypes
of the states the model computed. A stored entry that does not match it (a stale or foreign file:
another model's embedding, a truncated array) is recomputed and overwritten with a warning naming
the file, instead of reaching the segmenter as a tensor-size error. An entry of an image shape the
layout does not know yet is recomputed once, so that the layout is learnt from the model itself.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from wsss_project.utils.atomic import atomic_path
from wsss_project.utils.fingerprint import array_fingerprint

from .base import ImageState

logger = logging.getLogger(__name__)

_MODEL_DIR_CHARS = 16
LAYOUT_FILE = "layout.json"


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
            stored = self._read(path)
            problem = None if stored is None else self._layout_problem(stored, image)
            if stored is not None and problem is None:
                self.hits += 1
                return stored
            if problem:
                logger.warning("Embedding cache entry %s %s: recomputing and overwriting it", path, problem)
        self.misses += 1
        state = compute_fn(image)
        self._replace(path, lambda handle: np.savez(handle, **state.to_npz_dict()))
        self._remember_layout(image, state)
        return state

    def _read(self, path: Path) -> ImageState | None:
        """The stored state, or None (with a warning) when the file is unreadable."""
        try:
            with np.load(path, allow_pickle=False) as stored:
                return ImageState.from_npz_dict(stored)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            logger.warning("Unreadable embedding cache entry %s (%s): recomputing", path, err)
            return None

    def _layouts(self) -> dict[str, dict[str, list]]:
        """layout.json: image shape -> array name -> [shape, dtype] of the model's states ({} if absent)."""
        try:
            return json.loads((self.directory / LAYOUT_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def _layout_problem(self, stored: ImageState, image: np.ndarray) -> str | None:
        """Why a stored state cannot be this model's state of ``image`` ('' = not known yet), or None."""
        if tuple(stored.image_shape) != tuple(image.shape):
            return f"was made for an image of shape {tuple(stored.image_shape)}, not {tuple(image.shape)}"
        expected = self._layouts().get(_shape_key(image))
        if expected is None:
            return ""  # no state of this image shape computed yet: recompute once, quietly
        found = _layout(stored)
        if found != expected:
            return f"holds arrays {_describe_layout(found)}; this model's are {_describe_layout(expected)}"
        return None

    def _remember_layout(self, image: np.ndarray, state: ImageState) -> None:
        layouts = self._layouts()
        key, layout = _shape_key(image), _layout(state)
        if layouts.get(key) != layout:
            layouts[key] = layout
            text = json.dumps(layouts, sort_keys=True)
            self._replace(self.directory / LAYOUT_FILE, lambda handle: handle.write(text.encode()))

    @staticmethod
    def _replace(path: Path, write: Callable[[BinaryIO], Any]) -> None:
        """Write ``path`` atomically: ``write`` fills a file handle (np.savez given a path would
        append ".npz" to the temporary name)."""
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            write(handle)


def _shape_key(image: np.ndarray) -> str:
    return "x".join(str(side) for side in np.shape(image))


def _layout(state: ImageState) -> dict[str, list]:
    """Array name -> [shape, dtype] (JSON-comparable)."""
    return {name: [list(np.shape(a)), np.asarray(a).dtype.str] for name, a in sorted(state.arrays.items())}


def _describe_layout(layout: dict[str, list]) -> str:
    return ", ".join(f"{name} {tuple(shape)} {np.dtype(dtype).name}" for name, (shape, dtype) in layout.items())
