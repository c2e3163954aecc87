"""Peak memory of writing and evaluating a test scene's model output as the scene grows 16x.

    pytest tests/benchmarks/test_prediction_output_memory.py -m benchmark -s

One georeferenced test scene of 2048² and of 8192² pixels (256² test tiles, generated on demand:
this measures the output side, not data_preparation), each in a fresh process: predict_scenes with a
small random ResUNet streamed into `prediction_probabilities` (COG), classify_scenes into
`predictions` (COG), then the windowed test-scene evaluation against generated tile masks. Prints the
peak resident memory (ru_maxrss) of each process and its growth over the memory held before the
prediction started (torch, the model); the goal is a peak ratio <= 1.5 for 16x the area (a whole
8192² scene in float32 probabilities alone would be 512 MiB).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

TILE = 256
SIDES = (2048, 8192)
MAX_PEAK_RATIO = 1.5
PARAMS = {
    "model": "resunet", "base_width": 4, "depth": 2, "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225], "tta_flips": False, "inference_batch_size": 16,
}


class _GeneratedTiles(Mapping):
    """tile_id -> loader of a deterministic tile, like a PartitionedDataset's (nothing kept in memory)."""

    def __init__(self, ids: list[str], make) -> None:
        self._ids, self._make = ids, make

    def __getitem__(self, key):
        if key not in self._ids:
            raise KeyError(key)
        return lambda: self._make(key)

    def __iter__(self):
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


def _measure(side: int, folder: Path) -> dict:
    import torch

    from wsss_project.datasets import SceneRasterPartitions
    from wsss_project.learning.segmentation_training import build_resunet
    from wsss_project.pipelines.evaluation.nodes import evaluate_predictions
    from wsss_project.pipelines.segmentation_training.nodes import classify_scenes, predict_scenes

    torch.manual_seed(0)
    torch.set_num_threads(1)
    state = build_resunet(2, PARAMS).state_dict()
    ids = [f"big__{r}_{c}" for r in range(0, side, TILE) for c in range(0, side, TILE)]
    index = pd.DataFrame([{"tile_id": t, "scene_id": "big", "source": "bench", "row": int(t.split("__")[1].split("_")[0]),
                           "col": int(t.split("_")[-1]), "height": TILE, "width": TILE, "split": "test", "landslide": 1}
                          for t in ids])
    scenes = pd.DataFrame([{"scene_id": "big", "source": "bench", "height": side, "width": side, "split": "test",
                            "crs": "EPSG:32645", "transform": json.dumps([2.5, 0, 300000, 0, -2.5, 3100000]),
                            "image_path": None}])
    seed_of = lambda t: sum(map(ord, t))  # noqa: E731
    tiles = _GeneratedTiles(ids, lambda t: np.random.default_rng(seed_of(t)).integers(0, 256, (TILE, TILE, 3), np.uint8))
    masks = _GeneratedTiles(ids, lambda t: np.random.default_rng(seed_of(t)).integers(0, 2, (TILE, TILE), np.uint8))
    probabilities = SceneRasterPartitions(path=str(folder / "probabilities"), overwrite=True,
                                          dataset={"type": "wsss_project.datasets.SceneRasterDataset",
                                                   "overview_resampling": "average"})
    predictions = SceneRasterPartitions(path=str(folder / "predictions"), overwrite=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    probabilities.save(predict_scenes(tiles, index, scenes, state, PARAMS, ["landslide"], "cpu"))
    predictions.save(classify_scenes(probabilities.load(), ["landslide"]))
    metrics = evaluate_predictions(predictions.load(), masks, index, scenes, ["landslide"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert metrics["pixels"] == side * side
    return {"side": side, "tiles": len(ids), "seconds": time.perf_counter() - started,
            "peak_mib": peak / 1024, "growth_mib": (peak - before) / 1024}


def test_output_memory_depends_on_the_tile_batch_not_on_the_scene(tmp_path):
    results = []
    for side in SIDES:
        out = subprocess.run([sys.executable, __file__, str(side), str(tmp_path / str(side))], check=True,
                             capture_output=True, text=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for r in results:
        print(f"{r['side']}²: {r['tiles']} tiles in {r['seconds']:.1f} s, peak RSS {r['peak_mib']:.0f} MiB "
              f"(+{r['growth_mib']:.0f} MiB during prediction, classification and evaluation)")
    ratio = results[1]["peak_mib"] / results[0]["peak_mib"]
    print(f"peak RSS ratio for {SIDES[1] ** 2 // SIDES[0] ** 2}x the scene area: {ratio:.2f} (goal <= {MAX_PEAK_RATIO})")
    assert ratio <= MAX_PEAK_RATIO


if __name__ == "__main__":
    print(json.dumps(_measure(int(sys.argv[1]), Path(sys.argv[2]))))
