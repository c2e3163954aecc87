"""PRC's step 7: the intersection optimisation strategy (IOS) refining the final predictions.

PRC (seed 004) says an IOS "with SAM cleans pseudo-labels and segmentation results". The
pseudo-label half is :mod:`mask_rules` (``sam_labeling.merge: ios``); this module is the second
half, switched on by ``segmentation_training.refine: ios`` (default ``none``: predictions as the
ResUNet makes them, byte for byte). The rule is the same one, with the same setting:

    each connected component K of a predicted class-k mask is kept when
    IOS(K) = |K ∩ (H_k > T)| / |K| >= sam_labeling.ios.min_overlap,
    else its pixels become background.

H_k is class k's heatmap of the test scene (the localizer's ``cams`` of its test tiles, which
never overlap, stitched) and T the run's resolved prompt threshold (``prompt_generation_resolved``),
so a component survives when most of it lies where the classifier localised the class. The
test tiles' image-level labels are *not* read: they come from the test masks, which a prediction
must never see; the heatmap alone is the evidence.

What is judged is the ResUNet's own component, not a segmenter mask prompted from its box. Why:
the ResUNet learnt from SAM's (or GrabCut's) masks, so its components already follow the edges
the segmenter draws, and re-prompting would redraw about the same boundary at the cost of a SAM
encoder pass per test tile (several seconds each for ViT-B on a CPU) or a GrabCut per
component; a component of a stitched scene can also cross tile borders, where a tile-wise
segmenter would cut it. What PRC's IOS contributes is the decision (does this object agree with
the localisation?), and that needs only the component and the heatmap, so the refinement is the
same with or without a checkpoint, weight-free and deterministic.

A rejected component becomes background, not ignore (255): a prediction is a map in which every
pixel is decided, and its binary stored form is 0/255 with 255 = landslide, so an ignore value
would read as the class it was meant to remove. Components are 8-connected: a scar running
diagonally is one object, not a chain of pixels judged one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from wsss_project.contracts import BACKGROUND_INDEX

from .mask_rules import intersection_over_mask, passes_ios

REFINE_NONE, REFINE_IOS = "none", "ios"
REFINE_MODES = (REFINE_NONE, REFINE_IOS)
COMPONENT_CONNECTIVITY = 8  # see the module docstring
# cv2.connectedComponentsWithStats' stats columns: left, top, width, height (then area).
_LEFT, _TOP, _WIDTH, _HEIGHT = cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT


@dataclass(frozen=True)
class RefinementCounts:
    """Components kept and removed (set to background), and the pixels removed."""

    kept: int = 0
    removed: int = 0
    pixels_removed: int = 0

    def __add__(self, other: RefinementCounts) -> RefinementCounts:
        return RefinementCounts(
            self.kept + other.kept, self.removed + other.removed, self.pixels_removed + other.pixels_removed
        )


def refine_by_ios(
    class_index: np.ndarray, heatmaps: np.ndarray, threshold: int, min_overlap: float
) -> tuple[np.ndarray, RefinementCounts]:
    """The prediction with every component failing the IOS rule set to background.

    Args:
        class_index: (H, W) uint8 class indices, 0 = background, k = the k-th class.
        heatmaps: (C, H, W) uint8, the heatmap of each class (C >= the largest index).
        threshold: T; class k's region is ``heatmaps[k - 1] > T``.
        min_overlap: the IOS a component needs (``sam_labeling.ios.min_overlap``).

    Returns:
        A refined copy of ``class_index`` and the counts.
    """
    class_index = np.asarray(class_index)
    heatmaps = np.asarray(heatmaps)
    if heatmaps.ndim != 3 or heatmaps.shape[1:] != class_index.shape:
        raise ValueError(f"heatmaps must be (C, H, W) with (H, W) = {class_index.shape}, got {heatmaps.shape}")
    if class_index.size and int(class_index.max()) > len(heatmaps):
        raise ValueError(f"class index {int(class_index.max())} has no heatmap (there are {len(heatmaps)} classes)")
    refined, counts = class_index.copy(), RefinementCounts()
    for class_id, heatmap in enumerate(heatmaps, start=1):
        counts = counts + _refine_class(refined, class_index == class_id, heatmap > threshold, min_overlap)
    return refined, counts


def _refine_class(refined: np.ndarray, predicted: np.ndarray, region: np.ndarray, min_overlap: float) -> RefinementCounts:
    """Judge each component of one class's predicted mask; write background into ``refined``."""
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(
        predicted.astype(np.uint8), connectivity=COMPONENT_CONNECTIVITY
    )
    kept = removed = pixels = 0
    for component in range(1, n_labels):  # label 0 is everything outside the mask
        left, top = stats[component, _LEFT], stats[component, _TOP]
        box = np.s_[top : top + stats[component, _HEIGHT], left : left + stats[component, _WIDTH]]
        mask = labels[box] == component  # judged inside its bounding box: no scene-sized mask per component
        ios = intersection_over_mask(mask[None], region[box])
        if passes_ios(ios, min_overlap)[0]:
            kept += 1
            continue
        refined[box][mask] = BACKGROUND_INDEX
        removed += 1
        pixels += int(mask.sum())
    return RefinementCounts(kept, removed, pixels)
