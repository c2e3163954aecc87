"""UserInputError: a ValueError that click prints as one "Error:" line; Kedro's node log of it is dropped."""

from __future__ import annotations

import logging

import click
import pytest
from click.testing import CliRunner

from wsss_project.errors import NODE_LOGGER, UserInputError, report_once


def test_click_prints_the_message_once_without_a_traceback():
    @click.command()
    def run():
        raise UserInputError("parameter `seed` must be >= 0")

    result = CliRunner().invoke(run)
    assert result.exit_code == 1
    assert result.output == "Error: parameter `seed` must be >= 0\n"
    assert isinstance(result.exception, SystemExit)  # handled by click, not an uncaught traceback


def test_it_is_a_value_error():
    with pytest.raises(ValueError, match="bad"):
        raise UserInputError("bad")


@pytest.mark.parametrize(("error", "logged"), [(UserInputError("bad file"), False), (ValueError("a bug"), True)])
def test_kedro_s_node_failure_record_is_dropped_for_user_errors_only(caplog, error, logged):
    report_once()
    report_once()  # idempotent: one filter
    node_logger = logging.getLogger(NODE_LOGGER)
    assert sum(type(f).__name__ == "SuppressNodeFailureLog" for f in node_logger.filters) == 1
    with caplog.at_level(logging.INFO, logger=NODE_LOGGER):
        try:
            raise error
        except Exception as exc:  # as kedro.pipeline.node.Node.run logs it
            node_logger.error("Node %s failed with error: \n%s", "load_scenes", str(exc))
        node_logger.info("Running node: %s", "load_scenes")
    assert ("failed with error" in caplog.text) is logged
    assert "Running node: load_scenes" in caplog.text
