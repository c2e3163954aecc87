"""The data contracts between pipelines, owned here and nowhere else (DESIGN.md, "Data contracts").

Later pipelines, figures, notebooks and outside checks read these names and values, so every
module imports them from this one place instead of restating them:

- Keys: a *scene* is one input image, ``scene_id`` = its file stem. A *tile* is a window of a
  scene, ``tile_id = "<scene_id>__<row>_<col>"`` (row, col = top-left pixel in the scene;
  :func:`tile_id_for`, :func:`parse_tile_id`). Per-tile datasets are keyed by ``tile_id``,
  per-scene datasets by ``scene_id``; one class's CAM of one tile is the partition
  ``"<class>/<tile_id>"`` of ``cams`` (:func:`cam_key`).
- Splits: ``tile_index.split`` and ``scenes.split`` are ``train`` or ``test`` (:data:`SPLITS`).
- Masks (``tile_masks``, ``pseudo_masks``): uint8 class index, 0 = background, k = the k-th
  class of ``classes``, 255 = ignore (:data:`IGNORE_INDEX`: padding, nodata, unknown); binary
  ``predictions`` are stored as 0/255. Per-scene rasters (``predictions``,
  ``prediction_probabilities``) are GeoTIFF for georeferenced scenes, else PNG
  (datasets/scene_raster.py); the probability bands and their decision are owned by
  prediction_rasters.py.
- Heatmaps (``cams``): uint8 0..255 per tile and class (:data:`HEATMAP_MAX`), the H(x, y) that
  threshold T compares against; 0 outside the scene.
- Prompt modes of ``sam_labeling.prompt_mode``: ``point_box``, ``box``, ``point``
  (:data:`PROMPT_MODES`, APSAM Table II).
- The ``metrics`` report: ``{stage: {scope, oa, precision, recall, f1, iou, miou, per_class,
  per_source, ...}}`` for the stages :data:`STAGES` (cam_threshold, pseudo_labels, prediction,
  supervised_reference), each measured on the scenes of its scope (:data:`STAGE_SCOPES`:
  ``train_scenes`` or ``test_scenes``), plus :data:`RATIO_KEY`; :data:`MLFLOW_METRICS` are the
  keys logged to MLflow as ``<stage>.<metric>``.
- The refinement of the predictions (``segmentation_training.refine``) logs its counts
  :data:`REFINEMENT_COUNTS` to MLflow as ``prediction_refinement.<count>``.

Everything here is an immutable constant or a pure function of its arguments.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import NamedTuple

# --- keys -------------------------------------------------------------------------------------

TILE_ID_SEPARATOR = "__"
CAM_KEY_SEPARATOR = "/"
# the scene id may itself hold "__" or "_": the row and column are the last two numbers
_TILE_ID_PATTERN = re.compile(r"^(?P<scene_id>.+)__(?P<row>\d+)_(?P<col>\d+)$")


class TileKey(NamedTuple):
    """The parts of a ``tile_id``: its scene and the tile's top-left pixel in that scene."""

    scene_id: str
    row: int
    col: int


def tile_id_for(scene_id: str, row: int, col: int) -> str:
    """The tile key ``<scene_id>__<row>_<col>`` (row, col = the tile's top-left pixel)."""
    return f"{scene_id}{TILE_ID_SEPARATOR}{int(row)}_{int(col)}"


def parse_tile_id(tile_id: str) -> TileKey:
    """``(scene_id, row, col)`` of a tile key written by :func:`tile_id_for`."""
    match = _TILE_ID_PATTERN.match(tile_id)
    if match is None:
        raise ValueError(f"{tile_id!r} is not a tile id of the form <scene_id>__<row>_<col>")
    return TileKey(match["scene_id"], int(match["row"]), int(match["col"]))


def cam_key(class_name: str, tile_id: str) -> str:
    """Partition key of one class's CAM heatmap of one tile: ``<class>/<tile_id>``."""
    return f"{class_name}{CAM_KEY_SEPARATOR}{tile_id}"


# --- splits -----------------------------------------------------------------------------------

TRAIN_SPLIT = "train"
TEST_SPLIT = "test"
SPLITS = (TRAIN_SPLIT, TEST_SPLIT)

# --- masks and heatmaps -----------------------------------------------------------------------

BACKGROUND_INDEX = 0
BACKGROUND_NAME = "background"  # its name in `per_class` of the metrics report
IGNORE_INDEX = 255  # in every class-index mask: padding, nodata and "known positive, place unknown"
BINARY_FOREGROUND_VALUE = 255  # binary predictions are stored 0/255, so that they are visible
HEATMAP_MAX = 255  # heatmaps are uint8 0..HEATMAP_MAX
PROBABILITY_MAX = 255  # prediction_probabilities are uint8 0..PROBABILITY_MAX, PROBABILITY_MAX = probability 1

# --- prompt modes (APSAM Table II) ------------------------------------------------------------

POINT_BOX, BOX, POINT = "point_box", "box", "point"
PROMPT_MODES = (POINT_BOX, BOX, POINT)

# --- stages of the metrics report and the scenes each one measures ----------------------------

CAM_THRESHOLD = "cam_threshold"
PSEUDO_LABELS = "pseudo_labels"
PREDICTION = "prediction"
SUPERVISED_REFERENCE = "supervised_reference"
TRAIN_SCOPE = "train_scenes"
TEST_SCOPE = "test_scenes"
STAGE_SCOPES = MappingProxyType({
    CAM_THRESHOLD: TRAIN_SCOPE,
    PSEUDO_LABELS: TRAIN_SCOPE,
    PREDICTION: TEST_SCOPE,
    SUPERVISED_REFERENCE: TEST_SCOPE,
})
STAGES = tuple(STAGE_SCOPES)  # in pipeline order

# --- metric names (keys of each stage's entry in the metrics report) --------------------------

OA, PRECISION, RECALL, F1, IOU, MIOU = "oa", "precision", "recall", "f1", "iou", "miou"
CLASS_SCORES = (PRECISION, RECALL, F1, IOU)  # per class, and their mean over the foreground
SUMMARY_METRICS = (OA, *CLASS_SCORES)  # one stage's row of APSAM Table I
MLFLOW_METRICS = (*SUMMARY_METRICS, MIOU)  # logged per stage (and source) to MLflow
RATIO_KEY = "weak_to_full_ratio"  # prediction IoU / supervised_reference IoU
RATIO_METRIC = IOU

# --- the pseudo-label comparison (pipelines/pseudo_label_comparison): what a labeller costs and leaves out
SECONDS_PER_TILE = "seconds_per_tile"  # labelling seconds per train tile (the segmenter's setup apart)
IGNORED_FRACTION = "ignored_fraction"  # share of the train tiles' in-scene pixels a labeller left ignore

# --- the refinement of the final predictions (segmentation_training.refine) --------------------

# Logged to MLflow as `<REFINEMENT_PREFIX>.<count>`: connected components of the predicted class
# masks kept and set to background, and the pixels so removed, over every test scene.
REFINEMENT_PREFIX = "prediction_refinement"
COMPONENTS_KEPT, COMPONENTS_REMOVED, PIXELS_REMOVED = "components_kept", "components_removed", "pixels_removed"
REFINEMENT_COUNTS = (COMPONENTS_KEPT, COMPONENTS_REMOVED, PIXELS_REMOVED)

# --- the landslide inventory (geospatial/inventory.py owns its GeoPackage layout) ---------------

# Logged to MLflow as `<INVENTORY_PREFIX>.<name>`: N_POLYGONS of both layers, and the summed area of
# each layer under its area column's name (area_m2: scenes with a CRS; area_px: scenes without).
INVENTORY_PREFIX = "inventory"
N_POLYGONS = "n_polygons"
