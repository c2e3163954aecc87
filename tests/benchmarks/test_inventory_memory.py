"""The landslide inventory's peak memory follows its window, not the scene.

    pytest tests/benchmarks/test_inventory_memory.py -m benchmark -s

A scene of sparse discs (some cut by window seams) is generated window by window, so no whole-scene
array exists; scene_components polygonises it with 1024-pixel windows in a fresh process, and the
peak RSS beyond the imports is compared between a 2048² and an 8192² scene (16x the area). The
polygons themselves are output and grow with the scene (783 discs at 8192²), so the goal is the
issue's ≤ 1.5x, not 1x.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
WINDOW = 1024
GOAL = 1.5  # issue 10: peak memory when the scene area grows 16x

_CHILD = """
import json, resource, sys
import numpy as np
from wsss_project.geospatial.inventory import scene_components
size, window = int(sys.argv[1]), int(sys.argv[2])
SPACING, RADIUS = 300, 60
def read(w):
    rows = np.arange(w.row_off, w.row_off + w.height)[:, None] % SPACING - SPACING // 2
    cols = np.arange(w.col_off, w.col_off + w.width)[None, :] % SPACING - SPACING // 2
    return ((rows * rows + cols * cols) < RADIUS * RADIUS).astype(np.uint8)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
components = scene_components("s", read, lambda w: read(w)[None] * 200, size, size, 1, window)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"components": len(components), "extra_kib": peak - base}))
"""


def _measure(size: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(size), str(WINDOW)], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_inventory_peak_memory_follows_the_window():
    small, large = _measure(2048), _measure(8192)
    ratio = large["extra_kib"] / small["extra_kib"]
    print(f"\ninventory, window {WINDOW}: 2048² {small['extra_kib'] / 1024:.0f} MiB ({small['components']} polygons), "
          f"8192² {large['extra_kib'] / 1024:.0f} MiB ({large['components']} polygons): x{ratio:.2f} for 16x the area")
    assert ratio <= GOAL
