"""Turning training histories into a table and MLflow metric histories."""

from __future__ import annotations

import pandas as pd

STEP_COLUMNS = ("epoch", "step")  # per-epoch (CAM classifier, ResUNet) or per-step (pixel MIL) records


def history_outputs(history: list[dict[str, float]], prefix: str) -> tuple[pd.DataFrame, dict[str, list[dict]]]:
    """The history as a table (one row per record) and as `<prefix>.<metric>` MLflow curves."""
    table = pd.DataFrame(history)
    step = next((c for c in STEP_COLUMNS if c in table.columns), None)
    if step is None:
        raise ValueError(f"a training history needs one of the columns {list(STEP_COLUMNS)}, got {list(table.columns)}")
    curves = {
        f"{prefix}.{column}": [{"value": float(v), "step": int(e)} for e, v in zip(table[step], table[column], strict=True)]
        for column in table.columns
        if column not in STEP_COLUMNS
    }
    return table, curves
