"""Content fingerprints (sha256): the one place that hashes checkpoints, parameters and arrays.

A fingerprint names *what* a thing is, not where it lives: two copies of one SAM checkpoint have
one fingerprint, a checkpoint rewritten in place gets a new one. The embedding cache keys its
entries by them, and whatever must tell "the same model" from "another model" (a segmenter built
once per run, a run tag) asks :func:`checkpoint_fingerprint` too.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

_READ_CHUNK_BYTES = 1 << 20
_CHECKPOINT_CACHE_SIZE = 8


def checkpoint_fingerprint(path: str | Path, model_type: str) -> str:
    """sha256 of a checkpoint file's content (streamed) and its model type, e.g. SAM's ``vit_b``.

    Hashing a 375 MB vit_b takes about a second; within a process the digest is reused while the
    file's path, size and modification time are unchanged (every sweep namespace asks for it).
    """
    path = Path(path).expanduser()
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist: cannot fingerprint it") from None
    return _hash_checkpoint(str(path.resolve()), stat.st_size, stat.st_mtime_ns, model_type)


@functools.lru_cache(maxsize=_CHECKPOINT_CACHE_SIZE)
def _hash_checkpoint(path: str, size: int, mtime_ns: int, model_type: str) -> str:
    """The digest itself; ``size`` and ``mtime_ns`` are arguments only to key the cache."""
    digest = hashlib.sha256()
    # "sam:" as before the fingerprint had this home, so existing embedding caches stay valid
    digest.update(f"sam:{model_type}:".encode())
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_READ_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def params_fingerprint(backend: str, params: dict[str, Any]) -> str:
    """sha256 of a weight-free backend's name and parameters (key order does not matter)."""
    text = json.dumps({"backend": backend, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def array_fingerprint(array: np.ndarray, salt: str = "") -> str:
    """sha256 of ``salt`` and an array's shape, dtype and bytes (C order)."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256()
    digest.update(salt.encode())
    digest.update(str(array.shape).encode())
    digest.update(str(array.dtype).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def model_fingerprint(kind: str, state_dict: Mapping[str, Any], params: dict[str, Any]) -> str:
    """sha256 of a model's kind, settings and weights: names "this model" wherever it is rebuilt (the
    Dask workers' model cache). Tensors are hashed by name, shape, dtype and bytes; other entries by value."""
    import torch  # here: the other fingerprints need no torch

    digest = hashlib.sha256()
    digest.update(params_fingerprint(kind, params).encode())
    for name in sorted(state_dict):
        value = state_dict[name]
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):
            digest.update(f"{tuple(value.shape)}{value.dtype}".encode())
            digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(json.dumps(value, sort_keys=True, default=str).encode())
    return digest.hexdigest()
