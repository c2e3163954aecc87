"""Dask throughput of the per-tile stages on real landslide_real tiles: 1 worker against 2 workers
(1 thread each, on the machine's 2 cores) side by side in one run, the local backend for reference.

    pytest tests/benchmarks/test_dask_throughput.py -m benchmark -s

WSSS_BENCH_SCENES scenes (default 24: the first 12 bijie and 12 sichuan by name) of ../shared/data/landslide_real are
read, split and tiled by data_preparation's own nodes (256 px tiles, train tiles overlapping 40 %).
A pixel-MIL localizer is trained once on the train tiles' image-level labels (`mil.steps`
WSSS_BENCH_MIL_STEPS, default 150: heatmaps with real structure, so the prompts and GrabCut's work
are realistic); T is chosen by `threshold: auto` and the prompts are made once. The ResUNet has
seeded random weights (its inference costs the same as a trained one's). Then, for each backend,
through the nodes themselves:
- generate_cams on every tile (MIL inference),
- label_tiles_with_table on the train tiles (GrabCut, the weight-free default labeller),
- predict_scenes on the test scenes (ResUNet inference, stitching included);
tiles per second per stage and overall, and the ratio 2 workers / 1 worker. The LocalCluster is
started once per configuration (as a `kedro run` does; its start-up is printed, not counted).
The local backend runs with 1 torch thread, the workers' count, and every output (cams, masks,
masks table, predictions) must be identical across the three.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import torch
from kedro_runs import PROJECT_ROOT

from wsss_project.compute.backend import DASK, DASK_ONLY_DEFAULTS, LOCAL
from wsss_project.compute.cluster import open_cluster
from wsss_project.contracts import TEST_SPLIT, TRAIN_SPLIT
from wsss_project.datasets.scene_raster import scene_array
from wsss_project.learning.segmentation_training import build_resunet
from wsss_project.pipelines.data_preparation.nodes import (
    load_scenes,
    split_scene_table,
    tile_scenes,
)
from wsss_project.pipelines.localization.nodes import generate_cams, train_cam_model
from wsss_project.pipelines.prompt_generation.nodes import (
    generate_prompts,
    resolve_prompt_generation,
)
from wsss_project.pipelines.sam_labeling.nodes import build_segmenter, label_tiles_with_table
from wsss_project.pipelines.segmentation_training.nodes import predict_scenes
from wsss_project.settings import CONFIG_LOADER_CLASS
from wsss_project.tile_data import tiles_of_split

N_SCENES = int(os.environ.get("WSSS_BENCH_SCENES", "24"))
MIL_STEPS = int(os.environ.get("WSSS_BENCH_MIL_STEPS", "150"))
CONFIGS = {  # name -> compute section
    "local": {"backend": LOCAL, **DASK_ONLY_DEFAULTS},
    "dask, 1 worker": {"backend": DASK, **DASK_ONLY_DEFAULTS, "n_workers": 1, "threads_per_worker": 1},
    "dask, 2 workers": {"backend": DASK, **DASK_ONLY_DEFAULTS, "n_workers": 2, "threads_per_worker": 1},
}
STAGES = ("generate_cams", "label_tiles", "predict_scenes")


def _params(scenes_dir) -> dict:
    """This checkout's conf/base parameters on a folder of scenes, MIL trained for MIL_STEPS steps."""
    loader = CONFIG_LOADER_CLASS(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="local")
    params = dict(loader["parameters"])
    params["data"] = {**params["data"], "source": "folder", "folder": {
        **params["data"]["folder"], "images_dir": str(scenes_dir / "images"), "masks_dir": str(scenes_dir / "masks")}}
    params["localization"] = {**params["localization"], "mil": {**params["localization"]["mil"], "steps": MIL_STEPS}}
    return params


def _subset(data_dir, scenes_dir, n_scenes: int):
    """A folder of symlinks to n scenes and their masks, the first n / 2 of each source by name (the
    nodes read whole folders)."""
    names = sorted(path.name for path in (data_dir / "images").iterdir())
    sources = sorted({name.split("_")[0] for name in names})
    chosen: list[str] = []
    for source in sources:
        chosen += [name for name in names if name.startswith(f"{source}_")][: n_scenes // len(sources)]
    for kind in ("images", "masks"):
        (scenes_dir / kind).mkdir(parents=True)
        for name in chosen:
            (scenes_dir / kind / name).symlink_to(data_dir / kind / name)
    return scenes_dir


def _run_stages(inputs: dict, params: dict, compute: dict) -> tuple[dict, dict]:
    """The three per-tile stages through their nodes; outputs and seconds per stage."""
    tiles, index, scenes = inputs["tiles"], inputs["index"], inputs["scenes"]
    classes, device = params["classes"], "cpu"
    seconds, outputs = {}, {}
    started = time.perf_counter()
    outputs["cams"] = generate_cams(tiles, index, inputs["cam_model"], params["localization"], classes, device,
                                    compute=compute)
    seconds["generate_cams"] = time.perf_counter() - started
    started = time.perf_counter()
    outputs["masks"], outputs["table"] = label_tiles_with_table(
        inputs["segmenter"], tiles, inputs["cams"], inputs["prompts"], index, params["sam_labeling"],
        inputs["resolved"], classes, compute, device)
    seconds["label_tiles"] = time.perf_counter() - started
    started = time.perf_counter()
    # predict_scenes streams: the model runs as each scene raster is gathered (scene_array), as when it is saved
    rasters = predict_scenes(tiles, index, scenes, inputs["resunet"], params["segmentation_training"], classes, device,
                             None, None, compute)
    outputs["predictions"] = {scene_id: scene_array(raster) for scene_id, raster in rasters.items()}
    seconds["predict_scenes"] = time.perf_counter() - started
    return outputs, seconds


def _same(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_dask_throughput_one_worker_against_two(real_data, tmp_path):
    params = _params(_subset(real_data, tmp_path / "scenes", N_SCENES))
    classes, seed = params["classes"], params["seed"]
    raw = load_scenes(params["data"], classes, seed)
    scenes = split_scene_table(raw, params["data"], seed)
    index, tile_loaders, _ = tile_scenes(raw, scenes, params["data"], classes)
    tiles = {tile_id: load() for tile_id, load in tile_loaders.items()}  # read once: the stages time the work
    del raw, tile_loaders

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' torch threads: the local reference computes the same floats
    try:
        cam_model, _, _ = train_cam_model(tiles, index, params["localization"], classes, seed, "cpu")
        cams = generate_cams(tiles, index, cam_model, params["localization"], classes, "cpu")
        resolved, _ = resolve_prompt_generation(cams, index, params["prompt_generation"], classes)
        torch.manual_seed(seed)
        resunet = {k: v.clone() for k, v in build_resunet(len(classes) + 1, params["segmentation_training"])
                   .state_dict().items()}
        inputs = {"tiles": tiles, "index": index, "scenes": scenes, "cam_model": cam_model, "cams": cams,
                  "resolved": resolved, "prompts": generate_prompts(cams, index, resolved, classes),
                  "segmenter": build_segmenter(params["sam_labeling"], "cpu"), "resunet": resunet}
        counts = {"generate_cams": len(index), "label_tiles": len(tiles_of_split(index, resolved["splits"])),
                  "predict_scenes": len(tiles_of_split(index, TEST_SPLIT))}
        results = {}
        for name, compute in CONFIGS.items():
            started = time.perf_counter()
            if compute["backend"] == LOCAL:
                results[name] = (*_run_stages(inputs, params, compute), 0.0)
                continue
            with open_cluster(compute):
                start_up = time.perf_counter() - started
                results[name] = (*_run_stages(inputs, params, compute), start_up)
    finally:
        torch.set_num_threads(threads)

    n_train = len(tiles_of_split(index, TRAIN_SPLIT))
    print(f"\nDask throughput on {len(scenes)} landslide_real scenes ({len(index)} tiles: {n_train} train, "
          f"{counts['predict_scenes']} test), T = {resolved['threshold']}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    header = "".join(f"{stage:>18}" for stage in STAGES)
    print(f"  {'tiles/s':<18}{header}{'all stages':>14}{'cluster start s':>18}")
    rates = {}
    for name, (_, seconds, start_up) in results.items():
        rates[name] = {stage: counts[stage] / seconds[stage] for stage in STAGES}
        rates[name]["all"] = sum(counts.values()) / sum(seconds.values())
        print(f"  {name:<18}" + "".join(f"{rates[name][s]:18.1f}" for s in STAGES)
              + f"{rates[name]['all']:14.1f}{start_up:18.1f}")
    one, two = rates["dask, 1 worker"], rates["dask, 2 workers"]
    print(f"  {'ratio 2 / 1 worker':<18}" + "".join(f"{two[s] / one[s]:18.2f}" for s in STAGES)
          + f"{two['all'] / one['all']:14.2f}")

    reference = results["local"][0]
    for name, (outputs, _, _) in results.items():
        assert _same(outputs["cams"], reference["cams"]), name
        assert _same(outputs["masks"], reference["masks"]), name
        assert _same(outputs["predictions"], reference["predictions"]), name
        pd.testing.assert_frame_equal(outputs["table"], reference["table"])
