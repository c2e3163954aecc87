"""The hook that checks a run's parameters and inputs before any node runs."""

from __future__ import annotations

from typing import Any

from kedro.framework.hooks import hook_impl

from wsss_project.errors import report_once


class ValidateRunHook:
    """Fails a `kedro run` at once, naming the parameter or file, when the run could not succeed.

    tryfirst: runs before the other before_pipeline_run hooks (kedro-mlflow's opens the MLflow
    run), so a rejected run starts nothing and writes nothing.
    """

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        # Imported here: the schema pulls in torch and segment-anything, which `kedro --help` need not load.
        from wsss_project.validation.inputs import check_run_inputs
        from wsss_project.validation.schema import validate_parameters

        report_once()  # a UserInputError raised by a node is then printed once, by the CLI
        params = catalog.load("parameters")
        validate_parameters(params)
        check_run_inputs(params, pipeline.inputs())
