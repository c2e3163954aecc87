"""Project settings. https://docs.kedro.org/en/stable/kedro_project_setup/settings.html"""

from wsss_project.contracts import BOX, POINT, POINT_BOX
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

from wsss_project.hooks import MlflowRunTagsHook, MlflowTrackingUriHook  # noqa: E402
from wsss_project.run_transaction import RunTransactionHooks  # noqa: E402
from wsss_project.validation.hooks import ValidateRunHook  # noqa: E402

HOOKS = (ValidateRunHook(), MlflowTrackingUriHook(), MlflowRunTagsHook(), RunTransactionHooks())
