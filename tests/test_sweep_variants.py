"""The variant namespaces' parameters: made from settings.SWEEP_VARIANTS and the project's final
parameters, whichever environment or --params set them."""

from __future__ import annotations

import pytest
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from wsss_project import settings
from wsss_project.sweep_variants import SweepConfigLoader


def _session_params(project) -> dict:
    """The parameters a `kedro run` in `project` gets."""
    # kedro-mlflow opens the tracking store when the context is made; MLflow caches it per URI, so
    # a relative one would bind later project copies in this process to this one's database.
    (project / "conf" / "local" / "mlflow.yml").write_text(f"server:\n  mlflow_tracking_uri: sqlite:///{project / 'mlflow.db'}\n")
    bootstrap_project(project)
    with KedroSession.create(project_path=project) as session:
        return session.load_context().params


def _params(project, runtime_params=None) -> dict:
    """The parameters as the project's config loader gives them (`runtime_params` as `--params`)."""
    loader = settings.CONFIG_LOADER_CLASS(str(project / "conf"), runtime_params=runtime_params, **settings.CONFIG_LOADER_ARGS)
    return loader["parameters"]


def _base(project, section: str) -> dict:
    return yaml.safe_load((project / "conf" / "base" / f"parameters_{section}.yml").read_text())[section]


def test_settings_use_the_sweep_config_loader():
    assert settings.CONFIG_LOADER_CLASS is SweepConfigLoader


def test_parameters_carry_the_configured_values(project_copy, monkeypatch):
    monkeypatch.setattr(settings, "SWEEP_VARIANTS", {"threshold_sweep": [60, 125], "prompt_ablation": ["box"]})
    params = _session_params(project_copy)
    assert set(params["threshold_sweep"]) == {"t060", "t125"}
    assert set(params["prompt_ablation"]) == {"box"}
    for variant, threshold in (("t060", 60), ("t125", 125)):
        # prompt_generation with that T and nothing else changed
        assert params["threshold_sweep"][variant] == {"prompt_generation": {**params["prompt_generation"], "threshold": threshold}}
    assert params["prompt_ablation"]["box"] == {"sam_labeling": {**params["sam_labeling"], "prompt_mode": "box"}}
    assert params["prompt_generation"]["threshold"] == "auto"  # the run's own section is untouched


def test_overrides_in_another_environment_reach_every_namespace(project_copy):
    """Kedro resolves conf/base before merging conf/local, so a resolver in conf/base would miss these."""
    prompt_generation = _base(project_copy, "prompt_generation")
    prompt_generation["filters"]["min_contour_area"] = 7
    sam_labeling = {**_base(project_copy, "sam_labeling"), "unprompted_positive": "background"}
    (project_copy / "conf" / "local" / "parameters.yml").write_text(
        yaml.safe_dump({"prompt_generation": prompt_generation, "sam_labeling": sam_labeling}))
    params = _params(project_copy)
    assert {v["prompt_generation"]["filters"]["min_contour_area"] for v in params["threshold_sweep"].values()} == {7}
    assert {v["sam_labeling"]["unprompted_positive"] for v in params["prompt_ablation"].values()} == {"background"}


def test_run_time_overrides_reach_every_namespace(project_copy):
    params = _params(project_copy, {"prompt_generation": {"filters": {"min_box_side": 3}}, "sam_labeling": {"unprompted_positive": "background"}})
    assert {v["prompt_generation"]["filters"]["min_box_side"] for v in params["threshold_sweep"].values()} == {3}
    assert {v["sam_labeling"]["unprompted_positive"] for v in params["prompt_ablation"].values()} == {"background"}


def test_setting_a_namespace_parameter_directly_fails_naming_what_to_change(project_copy):
    with pytest.raises(ValueError, match=r"`threshold_sweep` cannot be set.*`prompt_generation`.*SWEEP_VARIANTS"):
        _params(project_copy, {"threshold_sweep": {"t050": {"prompt_generation": {"threshold": 60}}}})


def test_a_bad_configured_value_fails_the_parameters_naming_the_setting(project_copy, monkeypatch):
    monkeypatch.setattr(settings, "SWEEP_VARIANTS", {"threshold_sweep": [50, -1], "prompt_ablation": ["box"]})
    with pytest.raises(ValueError, match=r"SWEEP_VARIANTS\['threshold_sweep'\] in src/wsss_project/settings.py .*\[-1\]"):
        _params(project_copy)
