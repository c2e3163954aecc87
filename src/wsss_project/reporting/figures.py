"""Report figures after APSAM: sample panels (Fig. 4), stage bars (Table I), threshold
curve (Fig. 5) and prompt ablation bars (Table II); and the pseudo-labellers side by side.

Every function builds a :class:`matplotlib.figure.Figure` on an Agg canvas directly,
without pyplot: no global figure registry, no GUI backend, nothing to ``show`` and nothing
the caller must close (the figure is freed with its last reference). Save with
``fig.savefig(path)`` or kedro-datasets' ``matplotlib.MatplotlibWriter``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from wsss_project.contracts import (
    BACKGROUND_INDEX,
    F1,
    HEATMAP_MAX,
    IGNORE_INDEX,
    IOU,
    OA,
    PRECISION,
    RATIO_KEY,
    RECALL,
    SECONDS_PER_TILE,
    STAGES,
    SUMMARY_METRICS,
)

IGNORE_COLOUR = (0.5, 0.5, 0.5)
BACKGROUND_COLOUR = (0.0, 0.0, 0.0)
CLASS_COLORMAP = "tab10"
CAM_COLORMAP = "jet"
CAM_ALPHA = 0.5
BOX_COLOUR = "white"
BOX_LINEWIDTH = 1.5
POINT_COLOUR = "magenta"
POINT_MARKER = "*"
POINT_SIZE = 80
PANEL_SIZE = 2.5
BAR_FIGSIZE = (9.0, 4.5)
COMPARISON_FIGSIZE = (12.0, 4.5)
COMPARISON_WIDTHS = (2, 1)  # quality panel : cost panel
CURVE_FIGSIZE = (7.0, 4.5)
BAR_GROUP_WIDTH = 0.8
ANNOTATION_FONTSIZE = 7
PERCENT = 100.0

METRIC_LABELS = {OA: "OA", PRECISION: "Precision", RECALL: "Recall", F1: "F1", IOU: "IoU"}


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A pyplot-free figure with an Agg canvas attached (so savefig needs no backend)."""
    figure = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def colourise_mask(
    mask: np.ndarray,
    ignore_index: int = IGNORE_INDEX,
    class_colormap: str = CLASS_COLORMAP,
) -> np.ndarray:
    """``(H, W)`` class-index mask to ``(H, W, 3)`` float RGB: background black, ignore grey.

    Class ``c >= 1`` takes colour ``c - 1`` of a qualitative colormap, so a binary
    landslide mask shows one colour on black.
    """
    palette = colormaps[class_colormap]
    rgb = np.zeros((*mask.shape, 3), dtype=float)
    rgb[:] = BACKGROUND_COLOUR
    for class_index in np.unique(mask):
        if class_index == ignore_index:
            colour = IGNORE_COLOUR
        elif class_index == BACKGROUND_INDEX:
            continue
        else:
            colour = palette((int(class_index) - 1) % palette.N)[:3]
        rgb[mask == class_index] = colour
    return rgb


def _draw_prompts(ax: Any, prompts: pd.DataFrame | None) -> None:
    """Boxes as rectangles, points as markers; NaN points (``m00 == 0``) are skipped."""
    if prompts is None or len(prompts) == 0:
        return
    for row in prompts.itertuples(index=False):
        # boundingRect is in pixel indices; pixel edges sit half a pixel outside them.
        ax.add_patch(
            Rectangle(
                (row.x0 - 0.5, row.y0 - 0.5),
                row.w,
                row.h,
                fill=False,
                edgecolor=BOX_COLOUR,
                linewidth=BOX_LINEWIDTH,
            )
        )
    points = prompts[["px", "py"]].dropna()
    ax.scatter(
        points["px"],
        points["py"],
        marker=POINT_MARKER,
        s=POINT_SIZE,
        c=POINT_COLOUR,
        edgecolors="black",
        linewidths=0.5,
    )


def sample_panels(
    samples: Sequence[Mapping[str, Any]],
    ignore_index: int = IGNORE_INDEX,
    cam_alpha: float = CAM_ALPHA,
    panel_size: float = PANEL_SIZE,
) -> Figure:
    """APSAM Fig. 4 style grid: one row per tile.

    Columns: image, ground truth, CAM (jet, over the image) with box and point prompts,
    pseudo-mask, and prediction, the last only if some sample has one. Each sample has
    keys tile_id, image, gt, cam, prompts (rows of the prompts table), pseudo, prediction.
    """
    if not samples:
        raise ValueError("sample_panels needs at least one sample")
    with_prediction = any(sample.get("prediction") is not None for sample in samples)
    titles = ["image", "ground truth", "CAM + prompts", "pseudo-mask"]
    titles += ["prediction"] if with_prediction else []

    figure = _new_figure((panel_size * len(titles), panel_size * len(samples)))
    axes = figure.subplots(len(samples), len(titles), squeeze=False)
    for row_axes, sample in zip(axes, samples, strict=True):
        row_axes[0].imshow(sample["image"])
        row_axes[1].imshow(colourise_mask(sample["gt"], ignore_index), interpolation="nearest")
        row_axes[2].imshow(sample["image"])
        row_axes[2].imshow(sample["cam"], cmap=CAM_COLORMAP, vmin=0, vmax=HEATMAP_MAX, alpha=cam_alpha)
        _draw_prompts(row_axes[2], sample.get("prompts"))
        row_axes[3].imshow(colourise_mask(sample["pseudo"], ignore_index), interpolation="nearest")
        if with_prediction:
            prediction = sample.get("prediction")
            if prediction is None:
                row_axes[4].text(0.5, 0.5, "n/a", ha="center", va="center")
            else:
                row_axes[4].imshow(
                    colourise_mask(prediction, ignore_index), interpolation="nearest"
                )
        row_axes[0].set_ylabel(str(sample["tile_id"]), fontsize="small")
        for ax in row_axes:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, title in zip(axes[0], titles, strict=True):
        ax.set_title(title)
    return figure


def _grouped_bars(
    ax: Any,
    series: Mapping[str, Mapping[str, float]],
    metric_keys: Sequence[str],
    as_percent: bool,
) -> None:
    """One group per metric, one bar per series, values written on the bars."""
    scale = PERCENT if as_percent else 1.0
    centres = np.arange(len(metric_keys))
    width = BAR_GROUP_WIDTH / max(len(series), 1)
    for index, (name, values) in enumerate(series.items()):
        heights = [scale * float(values.get(key, np.nan)) for key in metric_keys]
        offset = (index - (len(series) - 1) / 2) * width
        bars = ax.bar(centres + offset, heights, width, label=name)
        labels = ["" if np.isnan(height) else f"{height:.1f}" for height in heights]
        ax.bar_label(bars, labels=labels, fontsize=ANNOTATION_FONTSIZE, padding=1)
    ax.set_xticks(centres, [METRIC_LABELS.get(key, key) for key in metric_keys])
    ax.set_ylabel("%" if as_percent else "score")
    ax.set_ylim(0, scale * 1.1)
    # outside the axes, so that the legend never hides a bar
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _ordered_stages(metrics: Mapping[str, Any]) -> list[str]:
    """Known stages in pipeline order, then any other stage in the order given.

    A stage is a mapping holding at least one metric (so `weak_to_full_ratio` is none).
    """
    stages = [
        name for name, value in metrics.items()
        if isinstance(value, Mapping) and any(key in value for key in SUMMARY_METRICS)
    ]
    known = [name for name in STAGES if name in stages]
    return known + [name for name in stages if name not in STAGES]


def _stage_label(stage: str, values: Mapping[str, Any]) -> str:
    """`stage (train scenes)` from a stage's `scope`; the bare name when it has none."""
    scope = values.get("scope")
    return f"{stage} ({str(scope).replace('_', ' ')})" if scope else stage


def _ratio_title(metrics: Mapping[str, Any]) -> str:
    """The title, with the weak-to-full IoU ratio when the metrics carry one (n/a when undefined)."""
    ratio = metrics.get(RATIO_KEY)
    if not isinstance(ratio, Mapping):
        return "Metrics per stage"
    value = ratio.get("value")
    shown = "n/a" if value is None else f"{value:.3f}"
    return f"Metrics per stage; weak-to-full IoU ratio (prediction / supervised_reference) = {shown}"


def stage_comparison(
    metrics: Mapping[str, Mapping[str, Any]],
    metric_keys: Sequence[str] = SUMMARY_METRICS,
    as_percent: bool = True,
) -> Figure:
    """APSAM Table I as grouped bars: OA, precision, recall, F1, IoU of each stage.

    ``metrics`` is the ``metrics`` dataset, ``{stage: {scope, oa, precision, ...}}``; entries
    without metrics are skipped and a missing metric leaves a gap. Each bar's label names the
    stage's scope (train or test scenes); supervised_reference stands beside prediction, and
    ``weak_to_full_ratio`` goes into the title.
    """
    series = {_stage_label(stage, metrics[stage]): metrics[stage] for stage in _ordered_stages(metrics)}
    if not series:
        raise ValueError("stage_comparison needs at least one stage of metrics")
    figure = _new_figure(BAR_FIGSIZE)
    ax = figure.subplots()
    _grouped_bars(ax, series, metric_keys, as_percent)
    ax.set_title(_ratio_title(metrics), fontsize="medium")
    return figure


def threshold_curve(
    table: pd.DataFrame,
    best_by: str = IOU,
    as_percent: bool = True,
) -> Figure:
    """APSAM Fig. 5: IoU and F1 against the threshold T, the oracle best T (chosen with masks) marked.

    ``table`` has columns T, iou, f1 and optionally n_prompts, drawn on a second y-axis.
    """
    missing = {"T", IOU, F1, best_by} - set(table.columns)
    if missing:
        raise ValueError(f"threshold table lacks columns {sorted(missing)}")
    if table.empty:
        raise ValueError("threshold table is empty")
    scale = PERCENT if as_percent else 1.0
    table = table.sort_values("T")
    figure = _new_figure(CURVE_FIGSIZE)
    ax = figure.subplots()
    for key in (IOU, F1):
        ax.plot(table["T"], scale * table[key], marker="o", label=METRIC_LABELS[key])

    best = table.loc[table[best_by].idxmax()]
    ax.axvline(best["T"], color="grey", linestyle="--", linewidth=1)
    ax.scatter(
        [best["T"]],
        [scale * best[best_by]],
        s=POINT_SIZE,
        c="red",
        zorder=3,
        label=f"oracle_best_T = {best['T']:g} (best {METRIC_LABELS.get(best_by, best_by)} against masks)",
    )
    ax.set_xlabel("threshold T")
    ax.set_ylabel("%" if as_percent else "score")
    handles, labels = ax.get_legend_handles_labels()

    if "n_prompts" in table.columns:
        twin = ax.twinx()
        twin.plot(
            table["T"],
            table["n_prompts"],
            color="grey",
            linestyle=":",
            marker="s",
            label="prompts",
        )
        twin.set_ylabel("number of prompts")
        twin_handles, twin_labels = twin.get_legend_handles_labels()
        handles, labels = handles + twin_handles, labels + twin_labels
    # below the plot (constrained layout makes room), so it hides no curve
    figure.legend(handles, labels, fontsize="small", loc="outside lower center", ncols=len(labels))
    ax.set_title("Parameter analysis of the threshold T")
    return figure


def prompt_ablation_bars(
    table: pd.DataFrame,
    metric_keys: Sequence[str] = SUMMARY_METRICS,
    as_percent: bool = True,
) -> Figure:
    """APSAM Table II as grouped bars: one bar per prompt mode (points, boxes, both)."""
    missing = {"prompt_mode", *metric_keys} - set(table.columns)
    if missing:
        raise ValueError(f"prompt ablation table lacks columns {sorted(missing)}")
    series = {
        str(row["prompt_mode"]): {key: row[key] for key in metric_keys}
        for _, row in table.iterrows()
    }
    if not series:
        raise ValueError("prompt ablation table is empty")
    figure = _new_figure(BAR_FIGSIZE)
    ax = figure.subplots()
    _grouped_bars(ax, series, metric_keys, as_percent)
    ax.set_title("Prompt ablation")
    return figure


def pseudo_label_comparison_bars(
    table: pd.DataFrame,
    metric_keys: Sequence[str] = (IOU, F1),
    as_percent: bool = True,
) -> Figure:
    """The pseudo-labellers side by side: IoU and F1 of each (left) and its seconds per tile (right,
    log scale). A labeller that did not run (no seconds per tile: skipped) keeps its place, marked so.

    ``table`` is the comparison table: columns variant, seconds_per_tile and the metrics.
    """
    missing = {"variant", SECONDS_PER_TILE, *metric_keys} - set(table.columns)
    if missing:
        raise ValueError(f"pseudo-label comparison table lacks columns {sorted(missing)}")
    if table.empty:
        raise ValueError("pseudo-label comparison table is empty")
    names = [str(name) for name in table["variant"]]
    skipped = table[SECONDS_PER_TILE].isna().to_numpy()
    figure = _new_figure(COMPARISON_FIGSIZE)
    quality, cost = figure.subplots(1, 2, width_ratios=COMPARISON_WIDTHS)
    scale = PERCENT if as_percent else 1.0
    centres = np.arange(len(names))
    width = BAR_GROUP_WIDTH / len(metric_keys)
    for index, key in enumerate(metric_keys):
        heights = scale * table[key].astype(float).to_numpy()
        bars = quality.bar(centres + (index - (len(metric_keys) - 1) / 2) * width, np.nan_to_num(heights), width,
                           label=METRIC_LABELS.get(key, key))
        labels = ["" if np.isnan(h) else f"{h:.1f}" for h in heights]
        quality.bar_label(bars, labels=labels, fontsize=ANNOTATION_FONTSIZE, padding=1)
    seconds = table[SECONDS_PER_TILE].astype(float).to_numpy()
    bars = cost.bar(centres, np.nan_to_num(seconds), BAR_GROUP_WIDTH, color="grey")
    cost.bar_label(bars, labels=["" if np.isnan(s) else f"{s:.3g}" for s in seconds],
                   fontsize=ANNOTATION_FONTSIZE, padding=1)
    if (seconds[~skipped] > 0).all() and (~skipped).any():  # times span orders of magnitude
        cost.set_yscale("log")
    for ax in (quality, cost):
        ax.set_xticks(centres, names, rotation=30, ha="right")
        for position in centres[skipped]:
            # x in data, y at the axes' foot: visible on the log-scaled cost axis too
            ax.annotate("skipped", (position, 0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                        textcoords="offset points", ha="center",
                        rotation=90, fontsize=ANNOTATION_FONTSIZE, va="bottom")
    quality.set_ylabel("%" if as_percent else "score")
    quality.set_ylim(0, scale * 1.1)
    quality.legend(fontsize="small", loc="upper right")
    quality.set_title("Pseudo-labels on the train scenes (each scene pixel once)", fontsize="medium")
    cost.set_ylabel("seconds per tile")
    cost.set_title("Labelling cost", fontsize="medium")
    return figure
