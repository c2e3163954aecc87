import numpy as np
import pandas as pd
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from toy_tiles import SEGMENTATION, toy_tiles

from wsss_project.compute.backend import DASK_ONLY_DEFAULTS, LOCAL
from wsss_project.datasets.scene_raster import scene_array
from wsss_project.pipeline_registry import register_pipelines
from wsss_project.pipelines.segmentation_training import create_pipeline as segmentation_pipeline
from wsss_project.pipelines.segmentation_training.pipeline import (
    alps_pretraining_pipeline,
    training_pipeline,
)
from wsss_project.pipelines.supervised_reference import create_pipeline as supervised_pipeline
from wsss_project.pipelines.supervised_reference.pipeline import HISTORY_PREFIX, NAMESPACE


def _toy_run_inputs():
    """Four train tiles and one 64x100 test scene (two tiles, the second a padded border tile)."""
    tiles, masks, _, index = toy_tiles(4)
    tiles["test0__0_0"], tiles["test0__0_64"] = tiles["scene1__0_0"], tiles["scene0__0_0"]
    masks["test0__0_0"], masks["test0__0_64"] = masks["scene1__0_0"], masks["scene0__0_0"]
    test_rows = [{**index.iloc[0].to_dict(), "tile_id": f"test0__0_{c}", "scene_id": "test0", "col": c,
                  "width": w, "split": "test"} for c, w in ((0, 64), (64, 36))]
    index = pd.concat([index, pd.DataFrame(test_rows)], ignore_index=True)
    scenes = pd.DataFrame({"scene_id": ["test0"], "source": ["toy"], "height": [64], "width": [100], "split": ["test"]})
    return {
        "tiles": tiles, "tile_masks": masks, "tile_index": index, "scenes": scenes,
        "params:segmentation_training": {**SEGMENTATION, "pretrain": "none"}, "params:classes": ["landslide"],
        "params:seed": 7, "params:device": "cpu", "params:text_prototype_kb": {},  # no CLIP: the ResUNet
        "params:data": {},  # no image files: every pixel holds data
        "params:compute": {"backend": LOCAL, **DASK_ONLY_DEFAULTS},
    }


class KeptDataset(MemoryDataset):
    """A MemoryDataset the runner cannot release, so intermediate outputs can be inspected."""

    def _release(self) -> None:
        pass


def _run(pipe, inputs):
    catalog = DataCatalog({name: MemoryDataset(value) for name, value in inputs.items()})
    for name in pipe.all_outputs():
        catalog[name] = KeptDataset()
    SequentialRunner().run(pipe, catalog)
    return catalog


def test_supervised_reference_is_the_segmentation_model_trained_on_the_true_masks():
    inputs = _toy_run_inputs()
    reference = _run(supervised_pipeline(), inputs)
    # The same nodes, parameters and seed fed the true masks as "pseudo-masks" give the same model
    # (without ALPS pre-training its nodes read neither the localizer nor the region settings;
    # segmentation_training's refinement, default none, reads the CAMs, T and the IOS setting).
    refinement_inputs = {"cams": {}, "prompt_generation_resolved": {"threshold": 100},
                         "params:sam_labeling": {"ios": {"min_overlap": 0.5}}}
    weak = _run(segmentation_pipeline(), {**inputs, **refinement_inputs, "pseudo_masks": inputs["tile_masks"],
                                          "cam_model": {}, "params:localization": {}})
    ours, theirs = reference.load("supervised_model"), weak.load("segmentation_model")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    predictions = {k: scene_array(v) for k, v in reference.load("supervised_predictions").items()}
    assert all(np.array_equal(predictions[k], scene_array(v)) for k, v in weak.load("predictions").items())
    assert set(predictions) == {"test0"} and predictions["test0"].shape == (64, 100)
    assert set(np.unique(predictions["test0"])) <= {0, 255}
    assert set(reference.load("supervised_prediction_probabilities")) == {"test0"}
    curves = reference.load("supervised_training_curves")
    assert curves and all(name.startswith(f"{HISTORY_PREFIX}.") for name in curves)


def test_supervised_reference_reads_tile_masks_and_never_pseudo_masks():
    pipe = supervised_pipeline()
    assert "tile_masks" in pipe.inputs() and "pseudo_masks" not in pipe.all_inputs()
    assert {"supervised_model", "supervised_predictions"} <= pipe.all_outputs()


def test_supervised_reference_runs_segmentation_trainings_nodes_namespaced():
    """One definition of the training and prediction: the reference only renames what they read and write.

    It has no ALPS pre-training nodes and no refinement: the reference is trained from scratch and its
    predictions are never refined, whatever segmentation_training.pretrain and refine say."""
    weak, reference = training_pipeline(), supervised_pipeline()
    assert [n.name for n in reference.nodes] == [f"{NAMESPACE}.{n.name}" for n in weak.nodes]
    alps_nodes = {n.name for n in alps_pretraining_pipeline().nodes}
    assert {n.name for n in segmentation_pipeline().nodes} == {n.name for n in weak.nodes} | alps_nodes | {"refine_predictions"}
    def functions(pipe):  # the training node is a functools.partial naming its masks dataset
        return [getattr(n.func, "func", n.func) for n in pipe.nodes]

    assert functions(reference) == functions(weak)
    assert {n.namespace for n in reference.nodes} == {NAMESPACE}


def test_default_pipeline_trains_and_evaluates_the_supervised_reference():
    pipelines = register_pipelines()
    default = {n.name for n in pipelines["__default__"].nodes}
    assert {f"{NAMESPACE}.train_segmentation_model", f"{NAMESPACE}.predict_scenes", "evaluate_supervised_reference"} <= default
    assert set(pipelines["supervised_reference"].nodes) <= set(pipelines["__default__"].nodes)
    # Nothing else in the default run is left dangling: the reference's predictions are consumed.
    assert "supervised_predictions" not in pipelines["__default__"].outputs()
