"""Choosing the APG threshold T without pixel labels, from heatmaps and image-level labels only.

The evidence is two histograms of heatmap values (0..255) over the scene part of the train
tiles: one of tiles labelled positive for the class, one of tiles labelled negative. Rules:

- `negative_quantile`: every pixel of a negative tile is a false positive of any T it exceeds,
  so T = the smallest value such that at most a share (1 - q) of negative-tile pixels lies above
  it ("H > T fires on at most 1 % of known background" for q = 0.99). Needs negative tiles.
- `otsu`: Otsu's threshold of the positive-tile histogram (between-class variance maximised).
- `fixed`: the configured `prompt_generation.fixed_threshold` (for MIL heatmaps 128 = p 0.5).

None of them reads a mask, so a chosen T is a weakly supervised setting, not an oracle.
"""

from __future__ import annotations

import numpy as np

from wsss_project.contracts import HEATMAP_MAX
from wsss_project.errors import UserInputError

N_LEVELS = HEATMAP_MAX + 1  # every value a uint8 heatmap can take

THRESHOLD_RULES = ("negative_quantile", "otsu", "fixed")
AUTO_THRESHOLD_SECTION = "prompt_generation.auto_threshold"


def _check_rule_params(values: dict) -> None:
    """The schema's rules for the `prompt_generation.auto_threshold` keys given (written once, there)."""
    # Imported here: the schema imports this module (for THRESHOLD_RULES).
    from wsss_project.validation.schema import check_section

    check_section(values, AUTO_THRESHOLD_SECTION, partial=True)


def heatmap_histogram(heatmap: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """(256,) int64 counts of a uint8 heatmap's values (over `valid` pixels only, when given)."""
    values = heatmap if valid is None else heatmap[valid]
    return np.bincount(values.ravel(), minlength=N_LEVELS).astype(np.int64)


def negative_quantile_threshold(negative_hist: np.ndarray, quantile: float) -> int:
    """Smallest T with share(H > T) <= 1 - quantile over the negative-tile pixels."""
    _check_rule_params({"negative_quantile": quantile})
    total = negative_hist.sum()
    if total == 0:
        raise UserInputError(
            "prompt_generation.threshold: auto with rule negative_quantile needs negative train tiles, and there "
            "are none: use rule otsu, or a number"
        )
    at_or_below = np.cumsum(negative_hist) / total
    return int(np.argmax(at_or_below >= quantile))


def otsu_threshold(hist: np.ndarray) -> int:
    """Otsu's threshold T of a 256-bin histogram (classes: values <= T and values > T)."""
    total = hist.sum()
    if total == 0:
        raise UserInputError("prompt_generation.threshold: auto with rule otsu needs positive train tiles, and there are none")
    levels = np.arange(N_LEVELS, dtype=np.float64)
    weight_low = np.cumsum(hist) / total
    mean_low_sum = np.cumsum(hist * levels) / total
    mean_all = mean_low_sum[-1]
    weight_high = 1.0 - weight_low
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean_all * weight_low - mean_low_sum) ** 2 / (weight_low * weight_high)
    between = np.nan_to_num(between, nan=-1.0, posinf=-1.0)
    return int(np.argmax(between))


def choose_threshold(
    positive_hist: np.ndarray, negative_hist: np.ndarray, rule: str, quantile: float, fixed: int
) -> int:
    """T by `rule` (see module doc)."""
    _check_rule_params({"rule": rule, "negative_quantile": quantile, "fixed_threshold": fixed})
    if rule == "negative_quantile":
        return negative_quantile_threshold(negative_hist, quantile)
    if rule == "otsu":
        return otsu_threshold(positive_hist)
    if rule == "fixed":
        return int(fixed)
    raise AssertionError(f"unreachable: the schema allows only the rules {THRESHOLD_RULES}, got {rule!r}")
