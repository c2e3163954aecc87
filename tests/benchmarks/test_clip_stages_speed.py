"""Seconds per tile of each stage of the seed 003 (CLIP + DINO) chain on 2 cores, at full model size.

The weights cannot be downloaded here, and speed does not depend on them: an open_clip ViT-B-16 and a
DINOv2 ViT-B/14 (transformers' default Dinov2Config) are built with random weights, saved, and loaded
back through `text_prototype_kb.clip.checkpoint` / `text_prototype_kb.dino.path` as a user's would be.
The run is the chain a user runs: text_prototype_kb, then data_preparation -> localization (method
clip, USR with CLIP attentions + DINOv2, VPE) -> prompt_generation -> sam_labeling (GrabCut) ->
segmentation_training (clip_decoder) -> supervised_reference (the same model on the masks) ->
evaluation, on the first WSSS_BENCH_SCENES (default 3) scenes
of each source of landslide_real. Quality figures from random weights mean nothing and are not
printed; only seconds, per stage and per tile (the stage's tiles: all tiles for localization, train
tiles for labelling; segmentation_training trains on the train tiles and predicts the test scenes, so
its figure is per tile of both).

    pytest tests/benchmarks/test_clip_stages_speed.py -m benchmark -s
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from kedro_runs import latest_parquet, make_workdir, run_stages
from transformers import Dinov2Config, Dinov2Model

from wsss_project.foundation.clip import build_clip, clip_model_config

CLIP_NAME = "ViT-B-16"
SOURCES = ("bijie", "sichuan")
DECODER_EPOCHS = 2


def _write_models(folder: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    checkpoint = folder / "clip_vit_b16_random.pt"
    torch.save(build_clip(clip_model_config(CLIP_NAME)).state_dict(), checkpoint)
    dino_dir = folder / "dinov2_base_random"
    Dinov2Model(Dinov2Config()).save_pretrained(dino_dir)
    return checkpoint, dino_dir


def _subset(real_data: Path, folder: Path, per_source: int) -> Path:
    for kind in ("images", "masks"):
        (folder / kind).mkdir(parents=True)
    for source in SOURCES:
        for image in sorted((real_data / "images").glob(f"{source}_*"))[:per_source]:
            shutil.copy(image, folder / "images" / image.name)
            shutil.copy(real_data / "masks" / image.name, folder / "masks" / image.name)
    return folder


def test_clip_chain_seconds_per_tile(real_data, tmp_path):
    checkpoint, dino_dir = _write_models(tmp_path)
    data = _subset(real_data, tmp_path / "data_subset", int(os.environ.get("WSSS_BENCH_SCENES", "3")))
    workdir = make_workdir(tmp_path / "run")
    params = {
        "data": {"source": "folder", "folder": {"images_dir": str(data / "images"), "masks_dir": str(data / "masks")}},
        "text_prototype_kb": {"clip": {"model_name": CLIP_NAME, "checkpoint": str(checkpoint)}, "dino": {"path": str(dino_dir)}},
        "localization": {"method": "clip", "usr": {"enabled": True}, "vpe": {"enabled": True}},
        "segmentation_training": {"model": "clip_decoder", "clip_decoder": {"epochs": DECODER_EPOCHS}},
    }
    stages = ["text_prototype_kb", "data_preparation", "localization", "prompt_generation", "sam_labeling",
              "segmentation_training", "supervised_reference", "evaluation"]
    seconds = run_stages(workdir, stages, params)
    index = latest_parquet(workdir / "data" / "02_intermediate" / "tile_index.parquet")
    n_all, n_train = len(index), int((index["split"] == "train").sum())
    tiles_of = {"localization": n_all, "sam_labeling": n_train, "segmentation_training": n_all,
                "supervised_reference": n_all}
    print(f"\nseed 003 chain at full size (random {CLIP_NAME} + DINOv2-B/14), {n_all} tiles ({n_train} train), "
          f"{torch.get_num_threads()} torch threads, params {json.dumps(params['localization'])}, "
          f"clip_decoder {DECODER_EPOCHS} epochs")
    for stage, value in seconds.items():
        per_tile = f"{value / tiles_of[stage]:.3f} s/tile over {tiles_of[stage]} tiles" if stage in tiles_of else ""
        print(f"  {stage:<24}{value:8.1f} s  {per_tile}")
    assert all(value > 0 for value in seconds.values())
