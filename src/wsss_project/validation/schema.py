"""The project's parameters, declared once: every key of conf/base/parameters*.yml with its type,
range or choices (pydantic v2 models, unknown keys forbidden).

`validate_parameters(params)` checks a run's merged parameters (base, local and `--params`) and
raises one UserInputError listing every problem, each naming its parameter; a misspelt key gets
the closest valid name (`prompt_generaton` -> did you mean `prompt_generation`?). The values stay
plain dicts for the nodes: this module only checks them.

Choices are imported from the module that owns them (the localizer registry, the segmenter
factory, ...), so adding a method there is the only change. A new top-level section (e.g. the
parameters of a namespaced pipeline) is one model and one line in `SECTIONS`.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

import torch
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)
from segment_anything import sam_model_registry

from wsss_project.compute.backend import BACKENDS, DASK, DASK_ONLY_DEFAULTS, LOCAL
from wsss_project.contracts import HEATMAP_MAX, IGNORE_INDEX, PROMPT_MODES, SPLITS
from wsss_project.errors import UserInputError
from wsss_project.foundation.clip import DENSE_PATHS
from wsss_project.geometry.prompts import RETRIEVAL_MODES
from wsss_project.geometry.thresholds import THRESHOLD_RULES
from wsss_project.imagery.synthetic import DEFAULT_SYNTHETIC_PARAMS
from wsss_project.learning.alps import PRETRAIN_ALPS, PRETRAIN_MODES
from wsss_project.learning.clip_decoder_training import (
    ALL_BLOCKS,
    CACHE_DTYPES,
    CLIP_DECODER_DEFAULTS,
)
from wsss_project.learning.localizers import LOCALIZERS
from wsss_project.learning.prc import IR_DISTANCES
from wsss_project.learning.segmentation_training import (
    CLIP_DECODER,
    OPTIMIZERS,
    RESUNET,
    RESUNET_ONLY_DEFAULTS,
    SEGMENTATION_MODELS,
)
from wsss_project.models.cam_classifier import _DILATED_STAGES, BACKBONES
from wsss_project.models.pixel_mil import POOLINGS
from wsss_project.pipelines.prompt_generation.nodes import AUTO
from wsss_project.pipelines.sam_labeling.nodes import UNPROMPTED_POLICIES
from wsss_project.segmenters.factory import (
    GRABCUT,
    REGIONS,
    SAM,
    SEGMENTERS,
    WORKERS_AUTO,
    resolve_segmenter_name,
    uses_sam,
)
from wsss_project.segmenters.mask_rules import (
    CONFIDENCE_AUTO,
    CONFIDENCE_CHOICES,
    MERGE_MODES,
    MERGE_SEGMENTER,
)
from wsss_project.segmenters.prediction_refinement import REFINE_MODES
from wsss_project.segmenters.regions import (
    REGION_SOURCES,
    SAM_AUTO,
    SUPERPIXEL_METHODS,
    SUPERPIXELS,
)
from wsss_project.segmenters.sam import MULTIMASK_CHOICES, SAM_CONFIDENCES

logger = logging.getLogger(__name__)

DATA_SOURCES = ("synthetic", "folder")
# data.folder.radiometry: every scene stretched per band (8-bit too), or 8-bit scenes as read
RADIOMETRY_STRETCH = "stretch"
RADIOMETRY_MODES = (RADIOMETRY_STRETCH, "as_read")
RGB_CHANNELS = 3
N_BLOCK_STAGES = 4
PERCENT_MAX = 100.0
# Where a user changes parameters, for the heading of the error message.
PARAMETER_SOURCES = "conf/base/parameters*.yml, conf/local/ or --params"
_MAX_SHOWN_CHARS = 80


def choice(options: Iterable[Any]) -> Any:
    """Literal[...] of an owner's tuple of valid values."""
    return Literal[tuple(options)]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
HeatmapLevel = Annotated[float, Field(ge=0, le=HEATMAP_MAX)]
RgbFloats = Annotated[list[float], Field(min_length=RGB_CHANNELS, max_length=RGB_CHANNELS)]
RgbStds = Annotated[list[PositiveFloat], Field(min_length=RGB_CHANNELS, max_length=RGB_CHANNELS)]
ColourValue = Annotated[int, Field(ge=0, le=255)]


def _auto_or_level(value: Any) -> Any:
    if value == AUTO or (_is_number(value) and 0 <= value <= HEATMAP_MAX):
        return value
    raise ValueError(f"must be {AUTO!r} or a number in 0..{HEATMAP_MAX}")


def _pos_weight(value: Any) -> Any:
    if value is None or value == "balanced" or (_is_number(value) and value > 0):
        return value
    raise ValueError("must be null, 'balanced' or a positive number")


def _multimask(value: Any) -> Any:
    if isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in MULTIMASK_CHOICES):
        return value
    raise ValueError(f"must be one of {list(MULTIMASK_CHOICES)}")


def _sam_model_type(value: str) -> str:
    # read at validation time: the registry is segment_anything's, and a caller may register a model
    if value not in sam_model_registry:
        raise ValueError(f"must be one of {list(sam_model_registry)}, got {value!r}")
    return value


def _device_name(value: str) -> str:
    if value == "auto":
        return value
    try:
        torch.device(value)
    except RuntimeError as err:
        raise ValueError("must be auto or a torch device (cpu, cuda, cuda:N)") from err
    return value


def _class_names(names: list[str]) -> list[str]:
    if any(not name.strip() or "/" in name for name in names):
        raise ValueError("class names must be non-empty and contain no '/' (they name folders of the cams)")
    if len(set(names)) != len(names):
        raise ValueError("class names must be unique")
    return names


def _regex_with_group(pattern: str) -> str:
    try:
        groups = re.compile(pattern).groups
    except re.error as err:
        raise ValueError(f"is not a regular expression ({err})") from err
    if groups < 1:
        raise ValueError("needs a group: its first group names the source")
    return pattern


def _percentile_pair(pair: list[float]) -> list[float]:
    low, high = pair
    if not 0.0 <= low < high <= PERCENT_MAX:
        raise ValueError("must be [low, high] with 0 <= low < high <= 100")
    return pair


def _generator_keys(overrides: dict[str, Any]) -> dict[str, Any]:
    unknown = [key for key in overrides if key not in DEFAULT_SYNTHETIC_PARAMS]
    if unknown:
        raise ValueError("; ".join(_unknown_key_message(["data", "synthetic", "generator", key],
                                                        list(DEFAULT_SYNTHETIC_PARAMS), None) for key in unknown))
    return overrides


class Section(BaseModel):
    """Strict: a YAML string "10" is not the integer 10, "false" is not a boolean; unknown keys fail."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --------------------------------------------------------------------------- data_preparation


class Synthetic(Section):
    n_scenes: Annotated[int, Field(ge=2, description="at least one train and one test scene")]
    height: PositiveInt
    width: PositiveInt
    generator: Annotated[dict[str, Any], AfterValidator(_generator_keys)]


class Folder(Section):
    images_dir: str | None
    masks_dir: str | None
    extensions: Annotated[list[str], Field(min_length=1)]
    mask_class_values: list[ColourValue]
    mask_palette: list[Annotated[list[ColourValue], Field(min_length=RGB_CHANNELS, max_length=RGB_CHANNELS)]] | None
    source_pattern: Annotated[str, AfterValidator(_regex_with_group)] | None
    rgb_bands: Annotated[list[PositiveInt], Field(min_length=RGB_CHANNELS, max_length=RGB_CHANNELS)] | None
    stretch_percentiles: Annotated[list[float], Field(min_length=2, max_length=2), AfterValidator(_percentile_pair)]
    radiometry: choice(RADIOMETRY_MODES)
    stretch_sample_pixels: PositiveInt


class Split(Section):
    test_fraction: Annotated[float, Field(gt=0, lt=1)]


class Data(Section):
    source: choice(DATA_SOURCES)
    synthetic: Synthetic
    folder: Folder
    tile_size: PositiveInt
    overlap: Annotated[float, Field(ge=0, lt=1)]
    label_min_fraction: Annotated[float, Field(gt=0, le=1)]
    split: Split

    @model_validator(mode="after")
    def _folder_settings_match_source(self) -> Data:
        if self.source == "folder":
            for key in ("images_dir", "masks_dir"):
                if getattr(self.folder, key) is None:
                    raise ValueError(f"parameter `data.folder.{key}` must be set when data.source is folder")
        elif self.folder.images_dir is not None:
            # Otherwise the synthetic default would run while the user believes it reads their imagery.
            raise ValueError(
                f"parameter `data.folder.images_dir` is set but data.source is {self.source}: "
                "set data.source: folder to read it, or images_dir: null"
            )
        return self


# --------------------------------------------------------------------------- localization


class Mil(Section):
    width: PositiveInt
    n_layers: PositiveInt
    input_scale: Annotated[float, Field(gt=0, le=1)]
    pooling: choice(POOLINGS)
    topk_fraction: Annotated[float, Field(gt=0, le=1)]
    lse_r: PositiveFloat
    steps: PositiveInt
    max_passes: Annotated[float, Field(ge=1)]
    batch_size: PositiveInt
    lr: PositiveFloat
    weight_decay: NonNegativeFloat
    warmup_fraction: Annotated[float, Field(ge=0, lt=1)]
    pos_weight: Annotated[Any, AfterValidator(_pos_weight)]
    log_every: PositiveInt


class IrLoss(Section):
    weight: Annotated[NonNegativeFloat, Field(description="0 = off: no decoder is built")]
    decoder_width: PositiveInt
    distance: choice(IR_DISTANCES)


class PrcModule(Section):
    enabled: bool
    projection_dim: PositiveInt
    temperature: PositiveFloat
    key_grid: PositiveInt
    # > 0: the affinity learns only from the classification loss on the refined CAM, so at 0 the
    # module would refine every CAM with an untrained affinity.
    refined_loss_weight: Annotated[
        float, Field(gt=0, description="the PRC module's affinity is trained only by this loss")
    ]
    constraint_weight: NonNegativeFloat


class Usr(Section):
    """USR (seed 003 eq. 10-15) on any localizer's heatmaps (learning/cam_refinement.py)."""

    enabled: bool
    alpha: Annotated[PositiveInt, Field(description="integer power of the diffusion matrix (eq. 15)")]
    temperature: PositiveFloat
    margin: Annotated[float, Field(ge=-1, le=1, description="cosine at which the joint affinity is 1/2")]
    max_grid: PositiveInt
    attention_layers: Annotated[PositiveInt, Field(description="clip only: last CLIP blocks whose attention enters eq. 12-14")]


class Vpe(Section):
    """VPE (seed 003 eq. 16-20) on any localizer's heatmaps (learning/cam_refinement.py)."""

    enabled: bool
    momentum: Annotated[float, Field(ge=0, lt=1)]
    seed_fraction: Annotated[float, Field(gt=0, le=1)]
    background_score: Annotated[float, Field(ge=0, lt=1)]


class ClipLocalization(Section):
    """`localization.method: clip` (learning/clip_cams.py); CLIP and DINOv2 come from text_prototype_kb."""

    image_size: PositiveInt | None
    dino_image_size: PositiveInt | None
    batch_size: PositiveInt
    dense_path: choice(DENSE_PATHS)
    topk_fraction: Annotated[float, Field(gt=0, le=1)]


class Localization(Section):
    method: choice(LOCALIZERS)
    image_mean: RgbFloats
    image_std: RgbStds
    augment: bool
    tta_flips: bool
    inference_batch_size: PositiveInt
    # PRC (seed 004), both methods
    ir_loss: IrLoss
    prc_module: PrcModule
    # CAM refinement of seed 003, both methods, at generate_cams time
    usr: Usr
    vpe: Vpe
    clip: ClipLocalization
    mil: Mil
    # cam_classifier only
    backbone: choice(BACKBONES)
    base_width: PositiveInt
    blocks: Annotated[list[PositiveInt], Field(min_length=N_BLOCK_STAGES, max_length=N_BLOCK_STAGES)]
    output_stride: choice(sorted(_DILATED_STAGES))
    pretrained_backbone: str | None
    epochs: PositiveInt
    batch_size: PositiveInt
    lr: PositiveFloat
    momentum: Annotated[float, Field(ge=0, lt=1)]
    weight_decay: NonNegativeFloat
    lr_step_size: PositiveInt
    lr_gamma: PositiveFloat
    pos_weight: Annotated[Any, AfterValidator(_pos_weight)]

    @model_validator(mode="after")
    def _backbone_needs_classifier(self) -> Localization:
        if self.pretrained_backbone is not None and self.method != "cam_classifier":
            raise ValueError(
                f"parameter `localization.pretrained_backbone` is set but localization.method is {self.method}, "
                "which does not use it: set method: cam_classifier, or pretrained_backbone: null"
            )
        return self


# --------------------------------------------------------------------------- prompt_generation


class AutoThreshold(Section):
    rule: choice(THRESHOLD_RULES)
    negative_quantile: Annotated[float, Field(gt=0, lt=1)]
    fixed_threshold: Annotated[int, Field(ge=0, le=HEATMAP_MAX)]


class Filters(Section):
    min_contour_area: NonNegativeFloat
    min_box_side: NonNegativeFloat
    retrieval: choice(RETRIEVAL_MODES)
    snap_points_inside: bool


class PromptGeneration(Section):
    threshold: Annotated[Any, AfterValidator(_auto_or_level)]
    auto_threshold: AutoThreshold
    splits: Annotated[list[choice(SPLITS)], Field(min_length=1)]
    filters: Filters


# --------------------------------------------------------------------------- sam_labeling


class Sam(Section):
    checkpoint: str | None
    model_type: Annotated[str, AfterValidator(_sam_model_type)]
    stability_score_offset: Annotated[float, Field(gt=0, description="0 would make every mask perfectly stable")]
    multimask_output: Annotated[Any, AfterValidator(_multimask)]


class GrabCut(Section):
    iterations: PositiveInt
    point_radius: NonNegativeInt
    point_neighbourhood_radius: NonNegativeInt
    cam_guided: bool
    prior_threshold: HeatmapLevel | None

    @model_validator(mode="after")
    def _neighbourhood_holds_the_point(self) -> GrabCut:
        if self.point_neighbourhood_radius < self.point_radius:
            raise ValueError(
                "parameter `sam_labeling.grabcut.point_neighbourhood_radius` must be >= "
                f"sam_labeling.grabcut.point_radius ({self.point_radius}), got {self.point_neighbourhood_radius}"
            )
        return self


Fraction = Annotated[float, Field(ge=0, le=1)]


class Slic(Section):
    n_segments: PositiveInt
    compactness: PositiveFloat
    sigma: NonNegativeFloat


class Felzenszwalb(Section):
    scale: PositiveFloat
    sigma: NonNegativeFloat
    min_size: PositiveInt


class Superpixels(Section):
    method: choice(SUPERPIXEL_METHODS)
    slic: Slic
    felzenszwalb: Felzenszwalb


class SamAuto(Section):
    points_per_side: PositiveInt
    points_per_batch: PositiveInt
    pred_iou_thresh: Fraction
    stability_score_thresh: Fraction
    stability_score_offset: PositiveFloat
    box_nms_thresh: Annotated[float, Field(gt=0, le=1)]
    crop_n_layers: NonNegativeInt
    min_mask_region_area: NonNegativeInt


class Regions(Section):
    source: choice(REGION_SOURCES)
    area_gate: Annotated[float, Field(gt=0, le=1, description="ALPS sigma: the largest share of a tile a region may cover")]
    superpixels: Superpixels
    sam_auto: SamAuto


class Ios(Section):
    min_overlap: Annotated[float, Field(ge=0, le=1, description="a fraction of the mask's pixels")]


class SamLabeling(Section):
    segmenter: choice(SEGMENTERS)
    prompt_mode: choice(PROMPT_MODES)
    unprompted_positive: choice(UNPROMPTED_POLICIES)
    merge: choice(MERGE_MODES)
    ios: Ios
    min_confidence: Annotated[float, Field(ge=0, le=1)] | None
    confidence: choice(CONFIDENCE_CHOICES)
    embedding_cache_dir: str | None
    workers: Literal[WORKERS_AUTO] | PositiveInt
    sam: Sam
    grabcut: GrabCut
    regions: Regions

    @model_validator(mode="after")
    def _confidence_is_read_and_measured(self) -> SamLabeling:
        if self.confidence != CONFIDENCE_AUTO and self.min_confidence is None:
            raise ValueError(
                f"parameter `sam_labeling.confidence` is {self.confidence} but sam_labeling.min_confidence is null, "
                "so nothing reads it: set min_confidence, or confidence: auto"
            )
        segmenter = resolve_segmenter_name(self.model_dump())
        if segmenter == REGIONS and (self.merge != MERGE_SEGMENTER or self.min_confidence is not None):
            raise ValueError(
                "parameters `sam_labeling.merge` and `sam_labeling.min_confidence` judge segmenter masks, which "
                f"segmenter {REGIONS} does not make (its regions already vote by mean CAM > T): use merge: "
                f"{MERGE_SEGMENTER} and min_confidence: null, or a promptable segmenter"
            )
        if self.confidence in SAM_CONFIDENCES and segmenter != SAM:
            raise ValueError(
                f"parameter `sam_labeling.confidence` is {self.confidence}, which only SAM measures, but the run "
                f"labels with {segmenter}: use confidence: auto or ios"
            )
        return self

    @model_validator(mode="after")
    def _checkpoint_matches_segmenter(self) -> SamLabeling:
        if self.segmenter == SAM and self.sam.checkpoint is None:
            raise ValueError(
                "parameter `sam_labeling.sam.checkpoint` must be set when sam_labeling.segmenter is sam "
                "(a local file; nothing is downloaded), or use segmenter: auto or grabcut"
            )
        if self.segmenter == GRABCUT and self.sam.checkpoint is not None:
            logger.warning(
                "sam_labeling.segmenter is grabcut: sam_labeling.sam.checkpoint %s is not used", self.sam.checkpoint
            )
        if self.segmenter == REGIONS and self.regions.source == SAM_AUTO and self.sam.checkpoint is None:
            raise ValueError(
                f"parameter `sam_labeling.sam.checkpoint` must be set when sam_labeling.regions.source is {SAM_AUTO} "
                f"(a local file; nothing is downloaded), or use regions.source: {SUPERPIXELS}"
            )
        if self.segmenter == REGIONS and self.regions.source == SUPERPIXELS and self.sam.checkpoint is not None:
            logger.warning(
                "sam_labeling.regions.source is superpixels: sam_labeling.sam.checkpoint %s is not used",
                self.sam.checkpoint,
            )
        if self.workers != WORKERS_AUTO and self.workers > 1 and uses_sam(self.model_dump()):
            raise ValueError(
                f"parameter `sam_labeling.workers` is {self.workers}, but SAM labels one tile at a time (its "
                "forward pass already uses every core through torch, and its embedding cache has one writer): "
                f"use workers: {WORKERS_AUTO} or 1"
            )
        return self


# --------------------------------------------------------------------------- segmentation_training, reporting


class Alps(Section):
    n_clusters: Annotated[int, Field(ge=2, lt=IGNORE_INDEX, description="cluster ids are 0..N-1 and 255 is ignore")]
    kmeans_batch_tiles: PositiveInt
    kmeans_passes: PositiveInt
    epochs: PositiveInt


def _distinct_blocks(blocks: Any) -> Any:
    if blocks != ALL_BLOCKS and len(set(blocks)) != len(blocks):
        raise ValueError("must name each CLIP block once")
    return blocks


class ClipDecoder(Section):
    """Seed 003's adapter + decoder (learning/clip_decoder_training.py); read with model: clip_decoder only."""

    blocks: Annotated[Literal[ALL_BLOCKS] | Annotated[list[PositiveInt], Field(min_length=1)],
                      AfterValidator(_distinct_blocks), Field(description="counted from 1")]
    image_size: PositiveInt | None
    adapter_dim: PositiveInt
    decoder_dim: PositiveInt
    decoder_depth: PositiveInt
    decoder_heads: PositiveInt
    mlp_ratio: PositiveFloat
    seg_weight: Annotated[float, Field(gt=0, description="the only loss that trains the class logits")]
    aff_weight: NonNegativeFloat
    lr: PositiveFloat
    weight_decay: NonNegativeFloat
    poly_power: NonNegativeFloat
    epochs: PositiveInt
    batch_size: PositiveInt
    feature_batch_size: PositiveInt
    feature_cache_dtype: choice(CACHE_DTYPES)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ClipDecoder:
        if self.decoder_dim % self.decoder_heads:
            raise ValueError(
                f"parameter `segmentation_training.clip_decoder.decoder_dim` ({self.decoder_dim}) must be divisible by "
                f"segmentation_training.clip_decoder.decoder_heads ({self.decoder_heads})"
            )
        return self


def _differs(value: Any, shipped: Any) -> bool:
    """A parameter value against its shipped one; sequences compare element-wise (YAML lists, pydantic tuples)."""
    if isinstance(shipped, list):
        return list(value) != shipped
    return value != shipped


class SegmentationTraining(Section):
    model: choice(SEGMENTATION_MODELS)
    base_width: PositiveInt
    depth: PositiveInt
    epochs: PositiveInt
    batch_size: PositiveInt
    optimizer: choice(OPTIMIZERS)
    lr: PositiveFloat
    weight_decay: NonNegativeFloat
    dice_weight: NonNegativeFloat
    augment: bool
    crop_size: PositiveInt | None
    image_mean: RgbFloats
    image_std: RgbStds
    tta_flips: bool
    inference_batch_size: PositiveInt
    pretrain: choice(PRETRAIN_MODES)
    alps: Alps
    refine: choice(REFINE_MODES)
    clip_decoder: ClipDecoder

    @model_validator(mode="after")
    def _settings_of_the_model(self) -> SegmentationTraining:
        if self.model == CLIP_DECODER and self.pretrain == PRETRAIN_ALPS:
            raise ValueError(
                f"parameter `segmentation_training.pretrain` is {PRETRAIN_ALPS}, which pre-trains the ResUNet only, but "
                f"segmentation_training.model is {CLIP_DECODER}: use pretrain: none, or model: {RESUNET}"
            )
        if self.model == CLIP_DECODER:
            dumped = self.model_dump()
            unread = sorted(k for k, v in RESUNET_ONLY_DEFAULTS.items() if _differs(dumped[k], v))
            if unread:
                raise ValueError(
                    f"parameter(s) {', '.join(f'`segmentation_training.{k}`' for k in unread)} changed from the "
                    f"shipped value, but segmentation_training.model is {CLIP_DECODER}, which reads its own "
                    f"`segmentation_training.clip_decoder` settings: set those, or model: {RESUNET}"
                )
        if self.model != CLIP_DECODER:
            changed = sorted(k for k, v in self.clip_decoder.model_dump().items() if v != CLIP_DECODER_DEFAULTS[k])
            if changed:
                raise ValueError(
                    f"parameter(s) {', '.join(f'`segmentation_training.clip_decoder.{k}`' for k in changed)} changed "
                    f"from the shipped value, but segmentation_training.model is {self.model}, which does not read "
                    f"them: set model: {CLIP_DECODER}, or leave clip_decoder as shipped"
                )
        return self


class Reporting(Section):
    n_sample_tiles: PositiveInt
    sample_seed: NonNegativeInt


class InventoryMinArea(Section):
    """Two keys, one per unit: a run may mix georeferenced scenes (m²) and scenes without CRS (pixels)."""

    m2: Annotated[float, Field(ge=0, description="square metres, scenes with a CRS")]
    px: Annotated[float, Field(ge=0, description="pixels, scenes without CRS")]


class Inventory(Section):
    """The landslide inventory (geospatial/inventory.py): built on the test scenes' predictions."""

    window_size: Annotated[int, Field(ge=1, description="pixels a side of the windows read at a time")]
    min_area: InventoryMinArea


# --------------------------------------------------------------------------- text_prototype_kb (seed 003)


class ClipModel(Section):
    model_name: Annotated[str, Field(min_length=1)]
    checkpoint: str | None  # null is rejected before a run that encodes texts (validation/inputs.py)
    text_batch_size: PositiveInt


class DinoModel(Section):
    path: str | None


class TextPrototypeKb(Section):
    clip: ClipModel
    dino: DinoModel
    n_prototypes: PositiveInt
    kmeans_n_init: PositiveInt
    top_k: PositiveInt
    enrichment_weight: NonNegativeFloat

    @model_validator(mode="after")
    def _top_k_within_prototypes(self) -> TextPrototypeKb:
        if self.top_k > self.n_prototypes:
            raise ValueError(
                f"parameter `text_prototype_kb.top_k` ({self.top_k}) must not exceed "
                f"text_prototype_kb.n_prototypes ({self.n_prototypes}): eq. 3 keeps K of the B prototypes"
            )
        return self


# --------------------------------------------------------------------------- compute


class Compute(Section):
    backend: choice(BACKENDS)
    scheduler_address: Annotated[str, Field(min_length=1)] | None
    n_workers: PositiveInt | None
    threads_per_worker: PositiveInt
    tiles_per_task: PositiveInt
    connect_timeout: PositiveFloat

    @model_validator(mode="after")
    def _dask_keys_are_read(self) -> Compute:
        if self.backend == LOCAL:
            changed = [key for key, shipped in DASK_ONLY_DEFAULTS.items() if getattr(self, key) != shipped]
            if changed:
                raise ValueError(
                    f"parameter `compute.{changed[0]}` is set but compute.backend is {LOCAL}, which does not read it "
                    f"(only backend: {DASK} does): set backend: {DASK}, or leave "
                    + ", ".join(f"compute.{key}" for key in changed) + " at the shipped value"
                )
        if self.scheduler_address is not None and self.n_workers is not None:
            raise ValueError(
                "parameter `compute.n_workers` must be null when compute.scheduler_address is set: the cluster "
                "there has its own workers (n_workers sizes the LocalCluster started without an address)"
            )
        return self


# --------------------------------------------------------------------------- sweep variants

class ThresholdVariant(Section):
    """One threshold_sweep namespace: the run's prompt_generation with its T (sweep_variants.py)."""

    prompt_generation: PromptGeneration


class AblationVariant(Section):
    """One prompt_ablation namespace: the run's sam_labeling with its prompt mode (sweep_variants.py)."""

    sam_labeling: SamLabeling


class ComparisonVariant(Section):
    """One pseudo_label_comparison namespace: the labeller's name, the run's sam_labeling with its
    overrides (null for CAM > T and for a skipped variant), and why it is skipped (sweep_variants.py)."""

    variant: str
    sam_labeling: SamLabeling | None
    skipped: str | None


# --------------------------------------------------------------------------- the whole parameter set

# Top-level key -> its type. A new section is one line here.
SECTIONS: dict[str, Any] = {
    "classes": Annotated[list[str], Field(min_length=1), AfterValidator(_class_names)],
    "seed": NonNegativeInt,
    "device": Annotated[str, AfterValidator(_device_name)],
    "data": Data,
    "localization": Localization,
    "prompt_generation": PromptGeneration,
    "sam_labeling": SamLabeling,
    "segmentation_training": SegmentationTraining,
    "reporting": Reporting,
    "inventory": Inventory,
    "text_prototype_kb": TextPrototypeKb,
    "compute": Compute,
    "threshold_sweep": dict[str, ThresholdVariant],
    "prompt_ablation": dict[str, AblationVariant],
    "pseudo_label_comparison": dict[str, ComparisonVariant],
}


class _CrossSectionChecks(Section):
    """Rules that tie two sections together (the fields come from SECTIONS)."""

    @model_validator(mode="after")
    def _mask_values_per_class(self) -> _CrossSectionChecks:
        folder, n_classes = self.data.folder, len(self.classes)
        if self.data.source == "folder":
            name, entries = ("mask_palette", folder.mask_palette) if folder.mask_palette else (
                "mask_class_values", folder.mask_class_values)
            if len(entries) != n_classes:
                raise ValueError(
                    f"parameter `data.folder.{name}` has {len(entries)} entries for the {n_classes} classes "
                    f"{self.classes}: give one per class, in `classes` order"
                )
        return self

    @model_validator(mode="after")
    def _alps_regions_have_their_model(self) -> _CrossSectionChecks:
        labeling = self.sam_labeling
        if (self.segmentation_training.pretrain == PRETRAIN_ALPS and labeling.regions.source == SAM_AUTO
                and labeling.sam.checkpoint is None):
            raise ValueError(
                f"parameter `sam_labeling.sam.checkpoint` must be set when segmentation_training.pretrain is "
                f"{PRETRAIN_ALPS} with sam_labeling.regions.source {SAM_AUTO} (a local file; nothing is downloaded), "
                f"or use regions.source: {SUPERPIXELS}"
            )
        return self

    @model_validator(mode="after")
    def _labelling_workers_under_dask(self) -> _CrossSectionChecks:
        if self.compute.backend == DASK and self.sam_labeling.workers != WORKERS_AUTO:
            raise ValueError(
                f"parameter `sam_labeling.workers` is {self.sam_labeling.workers}, but compute.backend is {DASK}: "
                "tiles are then labelled by the cluster's workers (compute.n_workers x compute.threads_per_worker), "
                f"not by that thread pool; use workers: {WORKERS_AUTO}"
            )
        return self

    @model_validator(mode="after")
    def _clip_decoder_has_its_clip(self) -> _CrossSectionChecks:
        if self.segmentation_training.model == CLIP_DECODER and self.text_prototype_kb.clip.checkpoint is None:
            raise ValueError(
                f"parameter `text_prototype_kb.clip.checkpoint` must be set when segmentation_training.model is "
                f"{CLIP_DECODER} (its adapter and decoder run on that frozen CLIP; a local file, nothing is "
                f"downloaded), or use model: {RESUNET}"
            )
        return self

    @model_validator(mode="after")
    def _training_size_fits_depth(self) -> _CrossSectionChecks:
        training = self.segmentation_training
        if training.model != RESUNET:
            return self  # the clip_decoder takes any tile size (CLIP resizes, the logits are upsampled)
        tile, crop, factor = self.data.tile_size, training.crop_size, 2**training.depth
        size, parameter = (crop, "segmentation_training.crop_size") if crop is not None and crop < tile else (
            tile, "data.tile_size")
        if size % factor:
            raise ValueError(
                f"parameter `{parameter}` ({size}) must be divisible by 2**segmentation_training.depth = {factor}: "
                "the ResUNet trains on that size"
            )
        return self


Parameters = create_model(
    "Parameters", __base__=_CrossSectionChecks, **{name: (kind, ...) for name, kind in SECTIONS.items()}
)


# --------------------------------------------------------------------------- messages


def validate_parameters(params: Mapping[str, Any]) -> BaseModel:
    """The checked parameters; a UserInputError naming every bad parameter otherwise."""
    try:
        return Parameters.model_validate(dict(params))
    except ValidationError as err:
        problems = [_describe(error) for error in err.errors()]
        raise UserInputError(
            f"invalid parameters ({PARAMETER_SOURCES}):\n" + "\n".join(f"  - {p}" for p in problems)
        ) from None


def check_section(params: Mapping[str, Any], path: str, *, partial: bool = False) -> None:
    """Check one section of the parameters (e.g. `localization.mil`) by its model here.

    For the code that reads a section outside a run (a node or a segmenter called directly), where
    validate_parameters has not run: the rules stay written once, in the section's model. Raises
    one UserInputError naming every bad `<path>.<key>`. `partial`: check only the keys present (for
    code that reads a few keys of a section); a missing key is then not an error here, and the
    section's cross-field rules, which need every field, are not checked.
    """
    model = _model_at(path.split("."))
    if model is None:
        raise ValueError(f"no parameter section `{path}` in the schema")
    try:
        model.model_validate(dict(params))
    except ValidationError as err:
        prefix = tuple(path.split("."))
        errors = [error for error in err.errors() if not (partial and error["type"] == "missing")]
        if errors:
            problems = [_describe({**error, "loc": (*prefix, *error["loc"])}) for error in errors]
            raise UserInputError("; ".join(problems)) from None


def _describe(error: Mapping[str, Any]) -> str:
    """One line for one pydantic error, naming the parameter by its dotted path."""
    loc = [str(part) for part in error["loc"]]
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
    if error["type"] == "extra_forbidden":
        model = _model_at(loc[:-1])
        return _unknown_key_message(loc, list(model.model_fields) if model else [], error["input"])
    if error["type"] == "missing":
        return f"missing parameter `{path}`"
    message = str(error["msg"]).removeprefix("Value error, ")
    if "parameter `" in message:  # a cross-field rule that names its parameters itself
        return message
    model = _model_at(loc[:-1])
    field = model.model_fields.get(loc[-1]) if model else None
    why = f" ({field.description})" if field is not None and field.description else ""
    got = f", got {_shown(error['input'])}"
    if message.startswith("must"):  # the validators of this module
        return f"parameter `{path}` {message}{why}{got}"
    return f"parameter `{path}`: {message[0].lower()}{message[1:]}{why}{got}"  # pydantic's "Input should be"


def _unknown_key_message(loc: list[str], valid: list[str], value: Any) -> str:
    """`unknown parameter a.b`; did you mean `a.c`? — the full leaf path when the value is one leaf."""
    *parent, key = loc
    close = difflib.get_close_matches(key, valid, n=1)
    leaf = _single_leaf(value)
    unknown = ".".join([*parent, key, *leaf])
    if close:
        return f"unknown parameter `{unknown}`; did you mean `{'.'.join([*parent, close[0], *leaf])}`?"
    where = f" of `{'.'.join(parent)}`" if parent else ""
    return f"unknown parameter `{unknown}`; the keys{where} are {sorted(valid)}"


def _single_leaf(value: Any) -> list[str]:
    """The key path inside a nested dict holding exactly one value, else []."""
    path: list[str] = []
    while isinstance(value, Mapping) and len(value) == 1:
        key, value = next(iter(value.items()))
        path.append(str(key))
    return path if not isinstance(value, Mapping) else []


def _model_at(loc: list[str]) -> type[BaseModel] | None:
    """The section model at a dotted location (None past a leaf)."""
    model: type[BaseModel] = Parameters
    for part in loc:
        field = model.model_fields.get(part)
        if field is None:
            return None
        nested = [t for t in (field.annotation, *getattr(field.annotation, "__args__", ()))
                  if isinstance(t, type) and issubclass(t, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return model


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN_CHARS else text[: _MAX_SHOWN_CHARS - 3] + "..."
