"""Checks of a run's parameters and inputs before any work starts (see schema.py, inputs.py, hooks.py)."""
