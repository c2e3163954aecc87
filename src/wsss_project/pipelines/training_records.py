"""Turning per-epoch training histories into a table and MLflow metric histories."""

from __future__ import annotations

import pandas as pd


def history_outputs(history: list[dict[str, float]], prefix: str) -> tuple[pd.DataFrame, dict[str, list[dict]]]:
    """The history as a table (one row per epoch) and as `<prefix>.<metric>` MLflow curves."""
    table = pd.DataFrame(history)
    curves = {
        f"{prefix}.{column}": [{"value": float(v), "step": int(e)} for e, v in zip(table["epoch"], table[column], strict=True)]
        for column in table.columns
        if column != "epoch"
    }
    return table, curves
