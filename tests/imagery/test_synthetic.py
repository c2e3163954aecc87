import cv2
import numpy as np
import pytest

from wsss_project.imagery.synthetic import DEFAULT_SYNTHETIC_PARAMS, generate_scene


def test_same_seed_same_scene_and_different_seed_differs():
    a, b, c = (generate_scene(s, 128, 160, {}) for s in (7, 7, 8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (128, 160, 3) and a[0].dtype == np.uint8 and a[1].shape == (128, 160)


def test_masks_are_binary_and_most_scenes_have_landslides():
    masks = [generate_scene(s, 256, 256, {})[1] for s in range(12)]
    assert all(set(np.unique(m)) <= {0, 1} for m in masks)
    assert sum(m.any() for m in masks) >= 8
    assert not generate_scene(0, 256, 256, {"empty_scene_probability": 1.0})[1].any()


def test_landslides_are_elongated_and_not_scattered_pixels():
    ratios, small_share = [], []
    for seed in range(10):
        mask = generate_scene(
            seed, 384, 384, {"debris_tongue_probability": 0.0, "landslide_count": [1, 1]}
        )[1]
        if not mask.any():
            continue
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
        biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        ys, xs = np.nonzero(labels == biggest)
        eigen = np.linalg.eigvalsh(np.cov(np.stack([xs, ys])))
        ratios.append(np.sqrt(eigen[1] / eigen[0]))
        small_share.append(1 - stats[biggest, cv2.CC_STAT_AREA] / mask.sum())
    assert np.mean(ratios) > 1.3
    assert np.mean(small_share) < 0.05  # the scar is one body with a ragged edge, not confetti


def test_colour_alone_does_not_solve_it():
    """The best single-channel threshold classifier stays far from a perfect IoU (distractors)."""
    ious = []
    for seed in range(4):
        image, mask = generate_scene(seed, 256, 256, {"empty_scene_probability": 0.0})
        best = 0.0
        for channel in range(3):
            values = image[..., channel]
            for t in range(0, 256, 8):
                for pred in (values > t, values <= t):
                    inter, union = np.logical_and(pred, mask).sum(), np.logical_or(pred, mask).sum()
                    best = max(best, inter / union)
        ious.append(best)
    assert max(ious) < 0.7  # measured 0.20..0.44 at the defaults


def test_unknown_parameter_is_named():
    with pytest.raises(ValueError, match="not_a_key"):
        generate_scene(0, 64, 64, {"not_a_key": 1})
    assert "landslide_count" in DEFAULT_SYNTHETIC_PARAMS
