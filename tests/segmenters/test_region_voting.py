"""Region voting: a region is class k when its tile is positive for k and its mean CAM exceeds T."""

from __future__ import annotations

import numpy as np
import pytest

from wsss_project.segmenters.region_voting import RegionLabeler, vote_regions
from wsss_project.segmenters.regions import RegionSet, RegionSource

T = 100
SIZE = 8


def _halves() -> RegionSet:
    """Two regions: the left and the right half of an 8x8 tile."""
    label_map = np.zeros((SIZE, SIZE), int)
    label_map[:, SIZE // 2 :] = 1
    return RegionSet.from_label_map(label_map)


def _cam(left_mean: float, right_mean: float) -> np.ndarray:
    """A CAM whose left half has mean `left_mean` (half its pixels one grey level above, half below
    it, for a half-integer mean) and whose right half is flat at `right_mean`."""
    cam = np.zeros((SIZE, SIZE), np.uint8)
    low, high = int(np.floor(left_mean)), int(np.ceil(left_mean))
    cam[: SIZE // 2, : SIZE // 2], cam[SIZE // 2 :, : SIZE // 2] = low, high
    cam[:, SIZE // 2 :] = right_mean
    return cam


class FixedRegions(RegionSource):
    """A region source that gives the same regions for any image, and records the images it saw."""

    source = "fixed"

    def __init__(self, regions: RegionSet | None, area_gate: float = 1.0) -> None:
        super().__init__(area_gate)
        self.fixed, self.seen = regions, []

    def all_regions(self, image: np.ndarray) -> RegionSet:
        self.seen.append(image.shape[:2])
        if self.fixed is None:
            return RegionSet(shape=image.shape[:2], pixels=())
        return self.fixed


def test_a_region_votes_for_the_class_only_when_its_mean_cam_exceeds_t():
    regions = _halves()
    # Left mean T + 0.5: above T, though half its pixels are at T. Right mean exactly T: not above.
    votes = vote_regions(regions, [(1, _cam(T + 0.5, T))], T)
    left_first = regions.masks()[0][0, 0]
    assert votes.tolist() == ([1, 0] if left_first else [0, 1])
    # Left mean T - 0.5: below T, though half its pixels are above T (a pixel vote would say yes).
    votes = vote_regions(regions, [(1, _cam(T - 0.5, T + 1))], T)
    assert votes.tolist() == ([0, 1] if left_first else [1, 0])


def test_the_highest_mean_wins_between_classes():
    regions = _halves()
    votes = vote_regions(regions, [(1, _cam(150, 120)), (2, _cam(200, 110))], T)
    painted = regions.paint(votes, fill=255)
    left = painted[:, : SIZE // 2]
    right = painted[:, SIZE // 2 :]
    assert (left == 2).all() and (right == 1).all()


def test_a_tile_without_regions_votes_nothing():
    assert vote_regions(RegionSet((SIZE, SIZE), ()), [(1, _cam(200, 200))], T).shape == (0,)


def _labeler(regions: RegionSet | None, unprompted: str = "ignore") -> tuple[RegionLabeler, FixedRegions]:
    source = FixedRegions(regions)
    return RegionLabeler(source, T, unprompted), source


IMAGE = np.zeros((SIZE, SIZE, 3), np.uint8)


def test_a_positive_tile_labels_the_voting_region_and_the_rest_background():
    labeler, _ = _labeler(_halves())
    mask = labeler.label("t", IMAGE, [(1, _cam(T + 0.5, T - 20))], 1, (SIZE, SIZE))
    assert (mask[:, : SIZE // 2] == 1).all() and (mask[:, SIZE // 2 :] == 0).all()


def test_a_negative_tile_is_all_background_whatever_its_cam():
    labeler, source = _labeler(_halves())
    mask = labeler.label("t", IMAGE, [], 1, (SIZE, SIZE))
    assert mask.dtype == np.uint8 and (mask == 0).all()
    assert source.seen == []  # no region is computed for a negative tile


def test_padding_outside_the_scene_is_ignored_and_regions_see_only_the_scene():
    labeler, source = _labeler(None)
    source.fixed = RegionSet.from_label_map(np.zeros((5, 6), int))  # one region over the scene part
    cam = np.full((SIZE, SIZE), 200, np.uint8)
    cam[:5, :6] = T + 1
    mask = labeler.label("t", IMAGE, [(1, cam)], 1, (5, 6))
    assert source.seen == [(5, 6)]
    assert (mask[5:] == 255).all() and (mask[:, 6:] == 255).all()
    assert (mask[:5, :6] == 1).all()
    negative = labeler.label("u", IMAGE, [], 1, (5, 6))
    assert (negative[5:] == 255).all() and (negative[:, 6:] == 255).all() and (negative[:5, :6] == 0).all()


def test_uncovered_pixels_are_ignored():
    regions = RegionSet.from_masks(np.pad(np.ones((1, 4, 4), bool), ((0, 0), (0, 4), (0, 4))))
    labeler, _ = _labeler(regions)
    mask = labeler.label("t", IMAGE, [(1, np.full((SIZE, SIZE), 200, np.uint8))], 1, (SIZE, SIZE))
    assert (mask[:4, :4] == 1).all() and (mask[4:] == 255).all() and (mask[:, 4:] == 255).all()


@pytest.mark.parametrize(("policy", "expected"), [("ignore", 255), ("background", 0)])
def test_a_positive_class_no_region_wins_follows_unprompted_positive(policy, expected):
    labeler, _ = _labeler(_halves(), policy)
    mask = labeler.label("t", IMAGE, [(1, _cam(T - 10, T))], 1, (SIZE, SIZE))
    assert (mask == expected).all()


def test_a_positive_tile_without_regions_is_ignored_and_counted():
    for policy in ("ignore", "background"):
        labeler, _ = _labeler(None, policy)
        mask = labeler.label("t", IMAGE, [(1, _cam(200, 200))], 1, (SIZE, SIZE))
        assert (mask == 255).all()  # no region covers any pixel
        assert labeler.without_regions == 1


def test_the_labeler_checks_its_policy():
    with pytest.raises(ValueError, match="sam_labeling.unprompted_positive"):
        RegionLabeler(FixedRegions(None), T, "guess")
