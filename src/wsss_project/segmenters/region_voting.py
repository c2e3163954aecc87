"""Region voting: pseudo-masks from a region set and the CAM (``sam_labeling.segmenter: regions``).

ALPS's use (b) in issue 8: no prompts. A region of a tile becomes class k when the tile is
labelled positive for k and the region's mean CAM of k exceeds the run's T (the resolved
``prompt_generation`` threshold, the same ``CAM > T`` rule the prompts use); every other region of
the tile is background. Rules, in the ``pseudo_masks`` contract (0 = background, k = class k,
255 = ignore):

* A tile negative for every class is all background (its image-level label says so); no region is
  computed for it.
* Several classes above T in one region: the class with the highest mean CAM wins (ties: the lower
  class id), as the promptable labeller lets the higher-scoring class win.
* Overlapping regions (SAM's masks nest whole / part / subpart): each region votes with its own
  mean CAM, and a pixel takes the vote of the smallest region covering it (the most specific one).
* Pixels no region covers (gaps between SAM's masks, regions dropped by the area gate, a tile for
  which SAM kept no mask) are 255: as in ALPS, uncovered pixels are not supervision.
* A positive class that no region wins: with ``unprompted_positive: ignore`` the whole tile is
  255 (we know the class is there but not where), with ``background`` its regions stay background,
  as for a positive tile without prompts.
* Pixels outside the scene (the padding of border tiles) are 255. Regions and means are computed
  on the tile's part inside the scene only, so the padding neither forms regions nor votes.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from wsss_project.contracts import IGNORE_INDEX
from wsss_project.imagery.tiling import TileWindow, mark_outside_scene

from .regions import RegionSet, RegionSource

logger = logging.getLogger(__name__)

BACKGROUND = 0
_LOG_EVERY_TILES = 50
IGNORE_UNVOTED = "ignore"  # the sam_labeling.unprompted_positive policy that blanks the tile


def vote_regions(regions: RegionSet, class_cams: list[tuple[int, np.ndarray]], threshold: float) -> np.ndarray:
    """The class of each region: k when its mean CAM of k exceeds ``threshold``, else background.

    Args:
        regions: the regions of one tile (:class:`RegionSet`).
        class_cams: ``(class_id, heatmap)`` for each class the tile is positive for; heatmaps are
            uint8 ``(H, W)`` on the 0..255 scale of T.
        threshold: T; a region votes for k only when its mean is strictly greater (``CAM > T``).

    Returns:
        uint8 ``(R,)``: 0 = background, k = class k. Where several classes exceed T, the highest
        mean wins (ties: the class listed first).
    """
    votes = np.full(len(regions), BACKGROUND, dtype=np.uint8)
    best = np.full(len(regions), -np.inf)
    for class_id, heatmap in class_cams:
        means = regions.means(heatmap)
        wins = (means > threshold) & (means > best)
        votes[wins] = class_id
        best[wins] = means[wins]
    return votes


class RegionLabeler:
    """Labels one tile at a time by region voting (see the module docstring for the rules).

    Args:
        source: makes each tile's gated regions (superpixels or SAM's automatic masks).
        threshold: T, the run's resolved ``prompt_generation.threshold``.
        unprompted: ``sam_labeling.unprompted_positive`` (ignore | background), for a positive
            class that no region wins.
    """

    def __init__(self, source: RegionSource, threshold: float, unprompted: str) -> None:
        # Imported here: the schema imports the segmenters.
        from wsss_project.validation.schema import check_section

        check_section({"unprompted_positive": unprompted}, "sam_labeling", partial=True)
        self.source, self.threshold, self.unprompted = source, float(threshold), unprompted
        self.done = self.without_regions = 0
        self.started = time.perf_counter()
        self.lock = threading.Lock()  # tiles may be labelled by several threads (sam_labeling.workers)

    def label(
        self, tile_id: str, image: np.ndarray, positive: list[tuple[int, np.ndarray]], total: int,
        valid_size: tuple[int, int],
    ) -> np.ndarray:
        """Pseudo-mask of one tile; positive = (class_id, CAM heatmap) of its positive classes.

        valid_size: the tile's (height, width) inside its scene (tile_index row); the rest is 255.
        tile_id is named in the log of a tile without regions.
        """
        height, width = valid_size
        mask = np.full(image.shape[:2], BACKGROUND, dtype=np.uint8)
        if positive:
            regions = self.source.regions(np.ascontiguousarray(image[:height, :width]))
            if not len(regions):
                with self.lock:
                    self.without_regions += 1
                logger.debug("Tile %s: no region passed (source %s)", tile_id, self.source.source)
            cams = [(k, heatmap[:height, :width]) for k, heatmap in positive]
            votes = vote_regions(regions, cams, self.threshold)
            inside = regions.paint(votes, fill=IGNORE_INDEX)
            unvoted = {k for k, _ in positive} - set(votes.tolist())
            if unvoted and self.unprompted == IGNORE_UNVOTED:
                inside[:] = IGNORE_INDEX
            mask[:height, :width] = inside
        self._progress(total)
        return mark_outside_scene(mask, TileWindow(0, 0, height, width), IGNORE_INDEX)

    def _progress(self, total: int) -> None:
        with self.lock:
            self.done += 1
            done = self.done
        if done % _LOG_EVERY_TILES == 0 or done == total:
            rate = done / max(time.perf_counter() - self.started, 1e-9)
            logger.info("Labelled %d/%d tiles by region voting (%.1f tiles/s, %d positive tiles without regions)",
                        done, total, rate, self.without_regions)
