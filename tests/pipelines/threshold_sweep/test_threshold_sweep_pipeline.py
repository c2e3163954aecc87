"""threshold_sweep and prompt_ablation: namespaces from settings.SWEEP_VARIANTS, the main
pipeline's nodes in each, one shared segmenter, and the gathered tables."""

import mlflow
import numpy as np
import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from test_run import TINY_PARAMS
from toy_tiles import PROMPT_GENERATION, SAM_LABELING, toy_tiles

from wsss_project import settings, sweep_variants
from wsss_project.compute.backend import DASK_ONLY_DEFAULTS, LOCAL
from wsss_project.pipeline_registry import register_pipelines
from wsss_project.pipelines.evaluation.nodes import evaluate_pseudo_labels
from wsss_project.pipelines.prompt_generation.nodes import generate_prompts
from wsss_project.pipelines.threshold_sweep import create_pipeline, create_prompt_ablation_pipeline
from wsss_project.pipelines.threshold_sweep.nodes import count_empty_positive_tiles
from wsss_project.segmenters import factory


def _configure(monkeypatch, thresholds, modes):
    monkeypatch.setattr(settings, "SWEEP_VARIANTS", {"threshold_sweep": thresholds, "prompt_ablation": modes})


def _namespaces(pipe):
    return {n.namespace for n in pipe.nodes if n.namespace}


def test_default_settings_declare_the_papers_sweep_and_ablation():
    assert sweep_variants.sweep_thresholds() == tuple(range(50, 171, 10))  # APSAM Fig. 5
    assert sweep_variants.ablation_modes() == ("point_box", "box", "point")  # APSAM Table II
    sweep = register_pipelines()["threshold_sweep"]
    assert _namespaces(sweep) == {f"threshold_sweep.t{t:03d}" for t in range(50, 171, 10)} | {
        "prompt_ablation.point_box", "prompt_ablation.box", "prompt_ablation.point"}


def test_namespaces_and_their_parameters_follow_the_configured_variants(monkeypatch):
    _configure(monkeypatch, [60, 120, 255], ["box"])
    pipelines = register_pipelines()
    sweep = pipelines["threshold_sweep"]
    assert _namespaces(sweep) == {"threshold_sweep.t060", "threshold_sweep.t120", "threshold_sweep.t255",
                                  "prompt_ablation.box"}
    assert _namespaces(pipelines["prompt_ablation"]) == {"prompt_ablation.box"}
    # Each namespace reads its own namespaced parameters, nothing else of its kind.
    assert {p for p in sweep.inputs() if p.startswith("params:threshold_sweep") or p.startswith("params:prompt_ablation")} == {
        "params:threshold_sweep.t060.prompt_generation", "params:threshold_sweep.t120.prompt_generation",
        "params:threshold_sweep.t255.prompt_generation", "params:prompt_ablation.box.sam_labeling"}
    # The same nodes as the main pipeline, one set per namespace; no node that rewrites parameters.
    t120 = {n.name.removeprefix("threshold_sweep.t120.") for n in sweep.nodes if n.namespace == "threshold_sweep.t120"}
    assert {"resolve_prompt_generation", "generate_prompts", "label_tiles", "evaluate_cam_threshold",
            "evaluate_pseudo_labels"} <= t120
    assert not any("set_" in n.name or "with_" in n.name for n in sweep.nodes)
    gather = sweep.only_nodes("gather_threshold_sweep").nodes[0]
    assert gather.inputs == ["threshold_sweep.t060.row", "threshold_sweep.t120.row", "threshold_sweep.t255.row"]


def test_one_segmenter_node_serves_every_namespace_and_one_variant_runs_alone_by_tag():
    sweep = register_pipelines()["threshold_sweep"]
    builders = [n for n in sweep.nodes if n.outputs == ["segmenter"]]
    assert [n.name for n in builders] == ["build_segmenter"]
    assert {n.name for n in sweep.nodes if "segmenter" in n.inputs} == {
        f"{ns}.label_tiles" for ns in _namespaces(sweep)}
    one = sweep.only_nodes_with_tags("threshold_sweep.t120")
    assert _namespaces(one) == {"threshold_sweep.t120"} and "build_segmenter" in {n.name for n in one.nodes}
    assert "segmenter" not in one.inputs()  # built in the same run
    # Shared inputs stay shared: no namespace gets its own copy of tiles or CAMs.
    assert {"tiles", "cams", "tile_index", "tile_masks", "prompts", "prompt_generation_resolved"} <= sweep.inputs()


@pytest.mark.parametrize(
    ("thresholds", "modes", "bad"),
    [
        ([50, 300], ["box"], r"SWEEP_VARIANTS\['threshold_sweep'\].*\[300\]"),
        ([50, 50.5], ["box"], r"SWEEP_VARIANTS\['threshold_sweep'\].*\[50.5\]"),
        ([], ["box"], r"SWEEP_VARIANTS\['threshold_sweep'\].*non-empty"),
        ([50, 60, 50], ["box"], r"SWEEP_VARIANTS\['threshold_sweep'\].*more than once"),
        ([50], ["boxes"], r"SWEEP_VARIANTS\['prompt_ablation'\].*\['boxes'\]"),
        ([50], "box", r"SWEEP_VARIANTS\['prompt_ablation'\].*non-empty list"),
    ],
)
def test_a_bad_configured_value_fails_naming_the_setting(monkeypatch, thresholds, modes, bad):
    _configure(monkeypatch, thresholds, modes)
    with pytest.raises(ValueError, match=bad):
        register_pipelines()


def _toy_catalog(thresholds, modes):
    tiles, masks, cams, index = toy_tiles()
    made = sweep_variants.sweep_parameters({"prompt_generation": PROMPT_GENERATION, "sam_labeling": SAM_LABELING})
    params = {
        **{f"params:threshold_sweep.t{t:03d}.prompt_generation": made["threshold_sweep"][f"t{t:03d}"]["prompt_generation"]
           for t in thresholds},
        **{f"params:prompt_ablation.{m}.sam_labeling": made["prompt_ablation"][m]["sam_labeling"] for m in modes},
    }
    return DataCatalog({
        "tiles": MemoryDataset(tiles), "cams": MemoryDataset(cams), "tile_index": MemoryDataset(index),
        "tile_masks": MemoryDataset(masks), "params:classes": MemoryDataset(["landslide"]),
        "params:device": MemoryDataset("cpu"), "params:sam_labeling": MemoryDataset(SAM_LABELING),
        "params:compute": MemoryDataset({"backend": LOCAL, **DASK_ONLY_DEFAULTS}),
        "prompt_generation_resolved": MemoryDataset(PROMPT_GENERATION),
        "prompts": MemoryDataset(generate_prompts(cams, index, PROMPT_GENERATION, ["landslide"])),
        **{name: MemoryDataset(value) for name, value in params.items()},
    })


def _run(pipe, thresholds, modes):
    outputs = SequentialRunner().run(pipe, _toy_catalog(thresholds, modes))
    return {name: ds.load() for name, ds in outputs.items()}


def test_sweep_gathers_one_row_per_threshold_with_one_segmenter(monkeypatch):
    _configure(monkeypatch, [60, 120, 255], ["point_box", "box", "point"])
    built = []
    original = factory.build_segmenter
    monkeypatch.setattr(factory, "build_segmenter", lambda *args: built.append(args) or original(*args))
    out = _run(create_pipeline(), [60, 120, 255], ["point_box", "box", "point"])
    assert len(built) == 1  # one model for three thresholds and three prompt modes

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
    # Each namespace ran at its own T, and says so under its own name.
    assert out["threshold_sweep.t060.prompt_threshold_mlflow"] == {"prompt_generation.threshold": {"value": 60.0, "step": 0}}


def test_prompt_ablation_has_the_configured_modes_at_the_runs_t(monkeypatch):
    _configure(monkeypatch, [120], ["point_box", "box", "point"])
    out = _run(create_prompt_ablation_pipeline(), [120], ["point_box", "box", "point"])
    table = out["prompt_ablation_table"].set_index("prompt_mode")
    assert table.index.tolist() == ["point_box", "box", "point"]
    assert (table["T"] == PROMPT_GENERATION["threshold"]).all()
    assert out["prompt_ablation_mlflow"]["prompt_ablation.point.iou"]["value"] == table.loc["point", "iou"]


def test_evaluation_reads_saved_partitions_as_loaders_or_arrays():
    """A saved variant's pseudo-masks come back from PartitionedDataset as loaders."""
    _, masks, _, index = toy_tiles()
    pseudo = {tile_id: np.where(mask == 1, 1, 0).astype(np.uint8) for tile_id, mask in masks.items()}
    first_positive = index.loc[index.landslide == 1, "tile_id"].iloc[0]
    pseudo[first_positive] = np.full_like(pseudo[first_positive], 255)  # an unprompted positive tile
    loaders = {tile_id: (lambda mask=mask: mask) for tile_id, mask in pseudo.items()}
    assert count_empty_positive_tiles(loaders, index, ["landslide"]) == count_empty_positive_tiles(pseudo, index, ["landslide"]) == 1
    assert evaluate_pseudo_labels(loaders, masks, index, ["landslide"]) == evaluate_pseudo_labels(pseudo, masks, index, ["landslide"])


def test_sweep_runs_in_a_kedro_session_from_its_catalog(project_copy, monkeypatch):
    """Every namespaced output resolves through conf/base/catalog.yml; evaluation reads the saved
    pseudo-masks back as PartitionedDataset loaders; one segmenter serves the whole run."""
    _configure(monkeypatch, [60, 120], ["box"])
    built = []
    original = factory.build_segmenter
    monkeypatch.setattr(factory, "build_segmenter", lambda *args: built.append(args) or original(*args))
    # An absolute tracking URI: MLflow caches its store per URI, so a relative one would log into
    # the first project copy that used it in this process.
    tracking_uri = f"sqlite:///{project_copy / 'mlflow.db'}"
    (project_copy / "conf" / "local" / "mlflow.yml").write_text(f"server:\n  mlflow_tracking_uri: {tracking_uri}\n")
    bootstrap_project(project_copy)
    for run in ({"pipeline_name": "__default__", "to_outputs": ["prompts", "prompt_generation_resolved"]},
                {"pipeline_name": "threshold_sweep"}):
        with KedroSession.create(project_path=project_copy, runtime_params=TINY_PARAMS) as session:
            session.run(**run)
        while mlflow.active_run() is not None:  # kedro-mlflow leaves its runs open in this process
            mlflow.end_run()
    assert len(built) == 1

    reporting = project_copy / "data" / "08_reporting"
    assert pd.read_csv(reporting / "threshold_sweep.csv")["T"].tolist() == [60, 120]
    assert pd.read_csv(reporting / "prompt_ablation.csv")["prompt_mode"].tolist() == ["box"]
    index = pd.read_parquet(next((project_copy / "data" / "02_intermediate" / "tile_index.parquet").rglob("*.parquet")))
    train = set(index.loc[index.split == "train", "tile_id"])
    for variant in ("threshold_sweep/t060", "threshold_sweep/t120", "prompt_ablation/box"):
        saved = project_copy / "data" / "04_feature" / variant / "pseudo_masks"
        assert {path.stem for path in saved.glob("*.png")} == train
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_names=["wsss_project"])
    assert runs["metrics.threshold_sweep.t060.prompt_generation.threshold"].dropna().tolist() == [60]
    assert runs["params.threshold_sweep.t120.prompt_generation.threshold"].dropna().tolist() == ["120"]
