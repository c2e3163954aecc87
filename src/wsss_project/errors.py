"""The project's one exception for mistakes a user fixes, and how `kedro run` shows it once.

A `UserInputError` is a bad parameter value or a bad input file; its message names which, and what
to do. It is

- a `click.ClickException`, so `kedro run` (click's standalone mode) prints it as one line
  "Error: <message>" and exits with status 1, without a traceback — as Kedro's own KedroCliError;
- a `ValueError`, so code and tests that treat bad values as ValueError keep working.

Kedro also logs "Node X failed with error: <message>" when a node raises; `report_once()` (called
by the project's hook) filters that record out for a UserInputError, so the message is printed
once, by the CLI. (Kedro's logging.yml accepts filter classes only from an environment allowlist,
so the filter is attached in code.)
"""

from __future__ import annotations

import logging
import sys

import click

# The logger and record with which Kedro reports, inside its `except`, that a node raised.
NODE_LOGGER = "kedro.pipeline.node"
_NODE_FAILURE_PREFIX = "Node %s failed"


class UserInputError(click.ClickException, ValueError):
    """A parameter or input file the user must fix; the message names it."""


class SuppressNodeFailureLog(logging.Filter):
    """Drops Kedro's "Node X failed with error" record when the error is a UserInputError.

    Kedro logs that record from inside its `except` block without passing the exception, so the
    exception being handled (sys.exc_info) is the one the record reports.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(_NODE_FAILURE_PREFIX):
            return True
        return not isinstance(sys.exc_info()[1], UserInputError)


def report_once() -> None:
    """Attach SuppressNodeFailureLog to Kedro's node logger (once, however often called)."""
    node_logger = logging.getLogger(NODE_LOGGER)
    if not any(isinstance(f, SuppressNodeFailureLog) for f in node_logger.filters):
        node_logger.addFilter(SuppressNodeFailureLog())
