"""The benchmarks' ``--quick`` smoke runs: they finish and end with one JSON object."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRID_KEYS = {
    "speedup_workers",
    "speedup_ray",
    "ray_startup_s",
    "serial_s",
    "workers_s",
    "ray_s",
    "n_runs",
    "steps",
    "cores",
    "same_results",
    "speedup_workers_vs_one_thread",
}


def test_grid_throughput_quick_ends_with_json_and_same_results():
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "grid_throughput.py"), "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert GRID_KEYS <= out.keys(), sorted(GRID_KEYS - out.keys())
    assert out["n_runs"] == 2 and out["quick"] is True
    assert out["same_results"] is True, out["differing_columns"]
    assert out["serial_s"] > 0 and out["workers_s"] > 0


def test_attribution_patching_quick_ends_with_json():
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "attribution_patching.py"), "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"speedup", "spearman", "sign_agreement", "exact_s", "attribution_s"} <= out.keys()
    assert out["quick"] is True and out["n_sites"] == 3 * 5 * 13 == out["n_layers"] * 5 * out["n_positions"]
    assert out["exact_s"] > 0 and out["attribution_s"] > 0 and -1 <= out["spearman"] <= 1
