"""Project settings. https://docs.kedro.org/en/stable/kedro_project_setup/settings.html"""

from wsss_project.contracts import BOX, CAM_THRESHOLD, POINT, POINT_BOX
from wsss_project.segmenters.factory import GRABCUT, REGIONS, SAM, WORKERS_AUTO
from wsss_project.segmenters.mask_rules import CONFIDENCE_AUTO, MERGE_IOS, MERGE_SEGMENTER
from wsss_project.segmenters.regions import SAM_AUTO, SUPERPIXELS
from wsss_project.sweep_variants import SweepConfigLoader

# OmegaConfigLoader, plus the parameters of the variant namespaces below (see sweep_variants.py).
CONFIG_LOADER_CLASS = SweepConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}

# Variant pipelines: one namespace per value. Kedro builds pipelines before it reads configuration,
# so the values live here; sweep_variants.py checks them and gives each namespace its parameters.
SWEEP_VARIANTS = {
    # Prompt thresholds T on the 0..255 heatmap (APSAM Fig. 5): threshold_sweep.t050 ... t170.
    "threshold_sweep": [50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160, 170],
    # SAM prompt modes, each at the run's resolved T (APSAM Table II): prompt_ablation.point_box ...
    "prompt_ablation": [POINT_BOX, BOX, POINT],
}

# The pseudo-labellers that `kedro run --pipeline pseudo_label_comparison` compares on the same train
# tiles: one namespace each (pseudo_label_comparison.grabcut, ...), each the run's `sam_labeling` with
# these overrides; None = CAM > T alone (no segmenter). Every labeller is pinned to its masks as given
# (no min_confidence) unless it is the IOS variant. SAM variants need sam_labeling.sam.checkpoint and are
# skipped (a `skipped` row) without it; they encode their own tiles (no embedding cache), so that their
# seconds per tile include SAM's image encoder instead of another variant's cached embeddings, and
# label one tile at a time (workers: auto), whatever the run's weight-free labeller uses.
_MASKS_AS_GIVEN = {"merge": MERGE_SEGMENTER, "min_confidence": None, "confidence": CONFIDENCE_AUTO}
COMPARISON_VARIANTS = {
    CAM_THRESHOLD: None,
    "grabcut": {"segmenter": GRABCUT, **_MASKS_AS_GIVEN},
    "grabcut_ios": {"segmenter": GRABCUT, **_MASKS_AS_GIVEN, "merge": MERGE_IOS},
    "regions": {"segmenter": REGIONS, **_MASKS_AS_GIVEN, "regions": {"source": SUPERPIXELS}},
    "sam": {"segmenter": SAM, **_MASKS_AS_GIVEN, "embedding_cache_dir": None, "workers": WORKERS_AUTO},
    "sam_ios": {"segmenter": SAM, **_MASKS_AS_GIVEN, "merge": MERGE_IOS, "embedding_cache_dir": None,
                "workers": WORKERS_AUTO},
    "sam_auto_regions": {"segmenter": REGIONS, **_MASKS_AS_GIVEN, "regions": {"source": SAM_AUTO},
                         "workers": WORKERS_AUTO},
}

from wsss_project.compute.cluster import ComputeClusterHook  # noqa: E402
from wsss_project.hooks import MlflowRunTagsHook, MlflowTrackingUriHook  # noqa: E402
from wsss_project.run_transaction import RunTransactionHooks  # noqa: E402
from wsss_project.validation.hooks import ValidateRunHook  # noqa: E402

HOOKS = (ValidateRunHook(), MlflowTrackingUriHook(), MlflowRunTagsHook(), RunTransactionHooks(), ComputeClusterHook())
