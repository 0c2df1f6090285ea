"""``--help`` of the scripts answers before torch or TransformerLens is imported."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIGHT = [
    "experiments/matching_init.py",
    "experiments/depth_vs_steps.py",
    "experiments/matching_mechanism.py",
    "experiments/probe_implicit_answers.py",
    "experiments/matching_noise.py",
    "experiments/implicit_cot.py",
    "experiments/probe_emulated_states.py",
    "experiments/decomposition.py",
    "experiments/scratchpad.py",
    "benchmarks/train_throughput.py",
    "benchmarks/probe_sweep.py",
    "benchmarks/help_speed.py",
    "benchmarks/grid_throughput.py",
    "benchmarks/attribution_patching.py",
]
PROBE = """
import runpy, sys
sys.argv = [{path!r}, "--help"]
try:
    runpy.run_path({path!r}, run_name="__main__")
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("torch", "transformer_lens", "pandas") if m in sys.modules)
print("HEAVY=" + ",".join(heavy), "CODE=" + str(code))
"""


@pytest.mark.parametrize("rel", LIGHT)
def test_help_imports_no_heavy_module(rel):
    path = str(ROOT / rel)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(path=path)], capture_output=True, text=True, timeout=120
    )
    last = proc.stdout.strip().splitlines()[-1]
    assert last == "HEAVY= CODE=0", proc.stdout[-500:] + proc.stderr[-2000:]
    assert "usage:" in proc.stdout and "--debug" in proc.stdout
    if "save_figure(" in Path(path).read_text():  # every script writing figures can skip the PNGs
        assert "--html-only" in proc.stdout
