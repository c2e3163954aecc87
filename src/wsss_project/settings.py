"""Project settings. https://docs.kedro.org/en/stable/kedro_project_setup/settings.html"""

from kedro.config import OmegaConfigLoader

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}

from wsss_project.hooks import MlflowRunTagsHook  # noqa: E402
from wsss_project.run_transaction import RunTransactionHooks  # noqa: E402

HOOKS = (MlflowRunTagsHook(), RunTransactionHooks())
