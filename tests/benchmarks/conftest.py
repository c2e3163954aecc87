"""Benchmarks are excluded from the default run (`-m 'not benchmark'`); run them with
`pytest tests/benchmarks -m benchmark -s`."""

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "benchmarks" in str(item.fspath):
            item.add_marker(pytest.mark.benchmark)
