"""utils/fingerprint.py: content fingerprints, unchanged from the keys existing caches were built with."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from wsss_project.utils.fingerprint import (
    array_fingerprint,
    checkpoint_fingerprint,
    params_fingerprint,
)


def test_checkpoint_fingerprint_is_the_content_digest_existing_caches_use(tmp_path):
    path = tmp_path / "sam_vit_b.pth"
    path.write_bytes(b"weights" * 1000)
    expected = hashlib.sha256(b"sam:vit_b:" + b"weights" * 1000).hexdigest()
    assert checkpoint_fingerprint(path, "vit_b") == expected
    copy = tmp_path / "elsewhere.pth"
    copy.write_bytes(path.read_bytes())
    assert checkpoint_fingerprint(copy, "vit_b") == expected  # what, not where


def test_checkpoint_fingerprint_follows_a_rewrite_in_place(tmp_path):
    path = tmp_path / "model.pth"
    path.write_bytes(b"weights v1")
    first = checkpoint_fingerprint(path, "vit_b")
    path.write_bytes(b"weights v2, longer")
    assert checkpoint_fingerprint(path, "vit_b") != first


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        checkpoint_fingerprint(tmp_path / "nowhere.pth", "vit_b")


def test_array_fingerprint_covers_salt_shape_dtype_and_bytes():
    image = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    digest = hashlib.sha256(b"model" + str((2, 4, 3)).encode() + b"uint8" + image.tobytes()).hexdigest()
    assert array_fingerprint(image, salt="model") == digest
    assert array_fingerprint(image.reshape(4, 2, 3), salt="model") != digest
    assert array_fingerprint(image.astype(np.int8), salt="model") != digest
    assert array_fingerprint(image, salt="other") != digest
    assert array_fingerprint(image[:, ::-1], salt="m") == array_fingerprint(image[:, ::-1].copy(), salt="m")


def test_params_fingerprint_ignores_key_order_only():
    a = params_fingerprint("grabcut", {"iterations": 5, "point_radius": 3})
    assert a == params_fingerprint("grabcut", {"point_radius": 3, "iterations": 5})
    assert a != params_fingerprint("grabcut", {"iterations": 6, "point_radius": 3})
    assert a != params_fingerprint("other", {"iterations": 5, "point_radius": 3})
