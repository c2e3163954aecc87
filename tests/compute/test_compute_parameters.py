"""The schema's rules for the `compute` section: a setting is read or refused, never silently unused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from wsss_project.compute.backend import DASK_ONLY_DEFAULTS
from wsss_project.errors import UserInputError
from wsss_project.settings import CONFIG_LOADER_CLASS
from wsss_project.validation.schema import validate_parameters

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"


def _params(runtime: dict) -> dict:
    """conf/base parameters with `runtime` merged as `kedro run --params` merges it."""
    loader = CONFIG_LOADER_CLASS(str(CONF.parent), base_env="base", default_run_env="local", runtime_params=runtime)
    return dict(loader["parameters"])


def _error(runtime: dict) -> str:
    with pytest.raises(UserInputError) as info:
        validate_parameters(_params(runtime))
    return str(info.value)


def test_the_shipped_compute_section_is_local_with_the_dask_keys_the_schema_compares_with():
    shipped = yaml.safe_load((CONF / "parameters_compute.yml").read_text())["compute"]
    assert shipped == {"backend": "local", **DASK_ONLY_DEFAULTS}
    validate_parameters(_params({"compute": {"backend": "dask"}}))
    validate_parameters(_params({"compute": {"backend": "dask", "scheduler_address": "tcp://10.0.0.5:8786"}}))


def test_an_unknown_backend_is_a_schema_error():
    assert "parameter `compute.backend`: input should be 'local' or 'dask', got 'spark'" in _error(
        {"compute": {"backend": "spark"}})


def test_a_dask_key_changed_with_the_local_backend_is_an_error_naming_it():
    message = _error({"compute": {"n_workers": 4}})
    assert "parameter `compute.n_workers` is set but compute.backend is local" in message
    assert "compute.scheduler_address" in _error({"compute": {"scheduler_address": "tcp://10.0.0.5:8786"}})


def test_n_workers_with_an_existing_cluster_is_an_error():
    message = _error({"compute": {"backend": "dask", "scheduler_address": "tcp://10.0.0.5:8786", "n_workers": 2}})
    assert "parameter `compute.n_workers` must be null when compute.scheduler_address is set" in message


@pytest.mark.parametrize("key, value", [("n_workers", 0), ("threads_per_worker", 0), ("tiles_per_task", 0),
                                        ("connect_timeout", 0), ("scheduler_address", "")])
def test_out_of_range_values_name_their_parameter(key, value):
    assert f"compute.{key}" in _error({"compute": {"backend": "dask", key: value}})


def test_the_labelling_thread_pool_is_not_silently_replaced_by_the_cluster():
    message = _error({"compute": {"backend": "dask"}, "sam_labeling": {"workers": 2}})
    assert "parameter `sam_labeling.workers` is 2, but compute.backend is dask" in message
    validate_parameters(_params({"compute": {"backend": "dask"}, "sam_labeling": {"workers": "auto"}}))
    validate_parameters(_params({"sam_labeling": {"workers": 2}}))  # the local backend's thread pool
