"""Kedro pipelines, one folder each."""
