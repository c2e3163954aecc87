"""EmbeddingCache: hits, misses, keys, atomic writes, fingerprints."""

from __future__ import annotations

import numpy as np
import pytest

from wsss_project.segmenters.base import ImageState
from wsss_project.segmenters.cache import LAYOUT_FILE, EmbeddingCache
from wsss_project.utils.fingerprint import checkpoint_fingerprint, params_fingerprint

MODEL_KEY = "a" * 64


def fake_embed(image: np.ndarray) -> ImageState:
    """A deterministic stand-in for an image encoder."""
    return ImageState(
        arrays={
            "embedding": image.astype(np.float32).mean(axis=2)[None, None],
            "original_size": np.asarray(image.shape[:2], dtype=np.int64),
        },
        image_shape=image.shape,
    )


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)


def test_hit_returns_equal_arrays(tmp_path, image):
    cache = EmbeddingCache(tmp_path, MODEL_KEY)
    first = cache.get_or_compute(image, fake_embed)
    second = cache.get_or_compute(image, lambda _: pytest.fail("should be a cache hit"))
    assert (cache.hits, cache.misses) == (1, 1)
    assert second.image_shape == first.image_shape == image.shape
    assert second.arrays.keys() == first.arrays.keys()
    for name, array in first.arrays.items():
        np.testing.assert_array_equal(second.arrays[name], array)
        assert second.arrays[name].dtype == array.dtype


def test_persists_across_instances(tmp_path, image):
    first = EmbeddingCache(tmp_path, MODEL_KEY).get_or_compute(image, fake_embed)
    cache = EmbeddingCache(tmp_path, MODEL_KEY)
    loaded = cache.get_or_compute(image, lambda _: pytest.fail("a new instance recomputed a stored entry"))
    assert (cache.hits, cache.misses) == (1, 0)
    for name, array in first.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[name], array)


def test_different_image_or_model_misses(tmp_path, image):
    cache = EmbeddingCache(tmp_path, MODEL_KEY)
    cache.get_or_compute(image, fake_embed)
    other = image.copy()
    other[0, 0, 0] ^= 1
    cache.get_or_compute(other, fake_embed)
    cache.get_or_compute(image.reshape(8, 32, 3), fake_embed)  # same bytes, other shape
    assert (cache.hits, cache.misses) == (0, 3)
    other_model = EmbeddingCache(tmp_path, "b" * 64)
    other_model.get_or_compute(image, fake_embed)
    assert (other_model.hits, other_model.misses) == (0, 1)


def test_layout_and_no_tmp_files(tmp_path, image):
    cache = EmbeddingCache(tmp_path, MODEL_KEY)
    cache.get_or_compute(image, fake_embed)
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert [f.parts[0] for f in files] == [MODEL_KEY[:16]] * 2
    assert sorted(f.suffix for f in files) == [".json", ".npz"]
    assert cache.path_for(image).is_file() and (cache.directory / LAYOUT_FILE).is_file()


def test_interrupted_write_leaves_nothing(tmp_path, image, monkeypatch):
    cache = EmbeddingCache(tmp_path, MODEL_KEY)

    def crash_midway(file, **_):
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        cache.get_or_compute(image, fake_embed)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_object_arrays_are_refused(tmp_path, image):
    cache = EmbeddingCache(tmp_path, MODEL_KEY)
    bad = ImageState(arrays={"bad": np.array([object()], dtype=object)}, image_shape=(1,))
    with pytest.raises(ValueError, match="numeric"):
        cache.get_or_compute(image, lambda _: bad)


def test_corrupt_entry_is_recomputed(tmp_path, image):
    cache = EmbeddingCache(tmp_path, MODEL_KEY)
    cache.get_or_compute(image, fake_embed)
    cache.path_for(image).write_bytes(b"not a zip")
    state = cache.get_or_compute(image, fake_embed)
    assert cache.misses == 2 and state.arrays["embedding"].shape == (1, 1, 16, 16)


def test_checkpoint_fingerprint_follows_content(tmp_path):
    path = tmp_path / "model.pth"
    path.write_bytes(b"weights v1")
    first = checkpoint_fingerprint(path, "vit_b")
    assert checkpoint_fingerprint(path, "vit_b") == first
    assert checkpoint_fingerprint(path, "vit_l") != first
    path.write_bytes(b"weights v2")
    assert checkpoint_fingerprint(path, "vit_b") != first


def test_params_fingerprint():
    a = params_fingerprint("grabcut", {"iterations": 5, "point_radius": 3})
    assert a == params_fingerprint("grabcut", {"point_radius": 3, "iterations": 5})
    assert a != params_fingerprint("grabcut", {"iterations": 6, "point_radius": 3})


def _overwrite_entry(cache: EmbeddingCache, image: np.ndarray, state: ImageState) -> None:
    np.savez(cache.path_for(image), **state.to_npz_dict())


def test_wrong_shape_entry_is_recomputed_with_a_warning_naming_the_file(tmp_path, image, caplog):
    cache = EmbeddingCache(tmp_path, MODEL_KEY)
    cache.get_or_compute(image, fake_embed)
    good = fake_embed(image)
    # e.g. another model's embedding under this model's key: a valid file of the wrong size
    _overwrite_entry(cache, image, ImageState({**good.arrays, "embedding": np.zeros((1, 1, 8, 8), np.float32)},
                                              image.shape))
    fresh = EmbeddingCache(tmp_path, MODEL_KEY)
    state = fresh.get_or_compute(image, fake_embed)
    assert (fresh.hits, fresh.misses) == (0, 1)
    np.testing.assert_array_equal(state.arrays["embedding"], good.arrays["embedding"])
    assert str(cache.path_for(image)) in caplog.text and "(1, 1, 8, 8)" in caplog.text
    # ... and the entry on disk is overwritten: the next run hits it
    again = EmbeddingCache(tmp_path, MODEL_KEY)
    again.get_or_compute(image, lambda _: pytest.fail("the overwritten entry should be a hit"))
    assert again.hits == 1


def test_wrong_dtype_or_image_shape_entry_is_recomputed(tmp_path, image):
    cache = EmbeddingCache(tmp_path, MODEL_KEY)
    good = cache.get_or_compute(image, fake_embed)
    for bad in (
        ImageState({**good.arrays, "embedding": good.arrays["embedding"].astype(np.float16)}, image.shape),
        ImageState(good.arrays, (8, 8, 3)),
    ):
        _overwrite_entry(cache, image, bad)
        misses = cache.misses
        state = cache.get_or_compute(image, fake_embed)
        assert cache.misses == misses + 1 and state.arrays["embedding"].dtype == np.float32


def test_entry_of_an_unknown_layout_is_recomputed_once(tmp_path, image):
    """A cache written before layout.json existed: its first entry per image shape is recomputed,
    after which entries are trusted."""
    cache = EmbeddingCache(tmp_path, MODEL_KEY)
    cache.get_or_compute(image, fake_embed)
    other = image[::-1].copy()
    cache.get_or_compute(other, fake_embed)
    (cache.directory / LAYOUT_FILE).unlink()
    old = EmbeddingCache(tmp_path, MODEL_KEY)
    old.get_or_compute(image, fake_embed)
    old.get_or_compute(other, lambda _: pytest.fail("the layout is known again: should be a hit"))
    assert (old.hits, old.misses) == (1, 1)
