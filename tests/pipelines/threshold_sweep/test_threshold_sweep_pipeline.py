import pandas as pd
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from toy_tiles import PROMPT_GENERATION, SAM_LABELING, toy_tiles

from wsss_project.pipeline_registry import register_pipelines
from wsss_project.pipelines.threshold_sweep import create_pipeline, create_prompt_ablation_pipeline
from wsss_project.pipelines.threshold_sweep.pipeline import SWEEP_THRESHOLDS


def test_registered_sweep_has_a_namespace_per_t_of_the_paper():
    assert SWEEP_THRESHOLDS == tuple(range(50, 171, 10)) and len(SWEEP_THRESHOLDS) == 13
    sweep = register_pipelines()["threshold_sweep"]
    namespaces = {n.namespace for n in sweep.nodes if n.namespace}
    assert {f"threshold_sweep.t{t:03d}" for t in SWEEP_THRESHOLDS} <= namespaces
    assert {"prompt_ablation.point_box", "prompt_ablation.box", "prompt_ablation.point"} <= namespaces
    # Shared inputs stay shared: no namespace gets its own copy of tiles or CAMs.
    assert {"tiles", "cams", "tile_index", "tile_masks", "prompt_generation_resolved"} <= sweep.inputs()
    # One namespace can run alone.
    assert len(sweep.only_nodes_with_namespaces(["threshold_sweep.t120"]).nodes) > 0


def _run(pipe):
    tiles, masks, cams, index = toy_tiles()
    catalog = DataCatalog({
        "tiles": MemoryDataset(tiles), "cams": MemoryDataset(cams), "tile_index": MemoryDataset(index),
        "tile_masks": MemoryDataset(masks), "params:classes": MemoryDataset(["landslide"]),
        "params:device": MemoryDataset("cpu"), "params:sam_labeling": MemoryDataset(SAM_LABELING),
        "prompt_generation_resolved": MemoryDataset(PROMPT_GENERATION),
    })
    outputs = SequentialRunner().run(pipe, catalog)
    return {name: ds.load() for name, ds in outputs.items()}


def test_sweep_gathers_one_row_per_threshold():
    out = _run(create_pipeline(thresholds=(60, 120, 255)))
    table: pd.DataFrame = out["threshold_sweep_table"]
    assert table["T"].tolist() == [60, 120, 255]
    assert {"oa", "precision", "recall", "f1", "iou", "n_prompts", "n_empty_tiles"} <= set(table.columns)
    assert table["n_prompts"].iloc[-1] == 0 and table["iou"].iloc[-1] == 0.0  # nothing exceeds 255
    assert table["iou"].iloc[1] > 0.8
    # At T=255 every positive tile is unprompted (all ignore): all counted empty; negatives never are.
    assert table["n_empty_tiles"].tolist()[-1] == 2 and table["n_empty_tiles"].tolist()[1] == 0
    best = out["threshold_sweep_mlflow"]["threshold_sweep.oracle_best_T"]["value"]
    assert best == table.loc[table["iou"].idxmax(), "T"] == table["oracle_best_T"].iloc[0]
    assert not any("best" in key and "oracle" not in key for key in out["threshold_sweep_mlflow"])


def test_prompt_ablation_has_three_modes_at_the_configured_t():
    out = _run(create_prompt_ablation_pipeline())
    table = out["prompt_ablation_table"].set_index("prompt_mode")
    assert table.index.tolist() == ["point_box", "box", "point"]
    assert (table["T"] == PROMPT_GENERATION["threshold"]).all()
    assert out["prompt_ablation_mlflow"]["prompt_ablation.point.iou"]["value"] == table.loc["point", "iou"]
