"""Grid throughput: one grid of matching runs, serially, in local worker processes and on local Ray.

The grid: ``--runs`` runs (default 4) of the main job's model shape (``experiments/matching_init.py``,
CPU preset: 3 layers, d_model 128, d_mlp 512, batch 256, bf16 autocast), ``--steps`` steps each
(default 100, without early stopping, so every run does the same work), its settings taken from the
main job in order (pre-LN then post-LN, gamma 0.3, 0.5, 1.0, seed 0, then seed 1, ...). Sized to
take ~2-4 minutes on an idle 2-core machine. The same grid is run three times, each into its own
temporary directory:

  (a) serial: one process, all the cores' threads (``Backend(workers=1, threads=cores)``) <- baseline
  (b) serial, one thread: one process, 1 thread (the thread count of each parallel run)
  (c) local workers: one spawned process per core, 1 thread each (``Backend(workers=cores, threads=1)``)
  (d) local Ray: ``ray.init`` timed on its own (ray_startup_s), then the grid (1 CPU, 1 thread a run)

speedup_workers = serial wall / workers wall; speedup_ray = serial wall / Ray wall (Ray started);
speedup_workers_vs_one_thread = (b) / (c), how well the workers scale. same_results: (b), (c) and
(d), which run every run with the same thread count, agree exactly (wall-time columns excluded);
(a) is compared too but may differ in the last digits of accuracies, since torch's intra-op threads
change the order of floating-point sums (serial_max_abs_diff reports by how much). Targets: >= 1.6x
for local workers on 2 cores; Ray within 10% of the local workers once started.

    python benchmarks/grid_throughput.py            # last line: one JSON object
    python benchmarks/grid_throughput.py --quick    # seconds: tiny models, 2 runs, a few steps
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from reasonlens import cli

ROOT = Path(__file__).resolve().parents[1]
WALL_COLUMNS = ("wall_time_s",)


def main_job():  # noqa: ANN201 - the experiments/matching_init.py module
    """The main job's script as a module (its ``build_runs``), imported after parsing."""
    path = ROOT / "experiments" / "matching_init.py"
    spec = importlib.util.spec_from_file_location("_grid_throughput_matching_init", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def build_grid(n_runs: int, steps: int, quick: bool) -> list:
    """The first ``n_runs`` runs of the main job's grid (more seeds when it has fewer), ``steps`` each."""
    from reasonlens.training.presets import MATCHING_INIT_PRESETS

    job = main_job()
    preset = MATCHING_INIT_PRESETS["quick" if quick else "cpu"]
    per_seed = len(preset.gammas) * len(preset.norms)
    seeds = tuple(range(-(-n_runs // per_seed)))
    # the script's own parser, so that a new option of the main job reaches the benchmark too
    argv = ["--seeds", *map(str, seeds), "--steps", str(steps), "--no-early-stop", "--device", "cpu"]
    args = job.parse_args([*argv, "--no-progress", *(["--quick"] if quick else [])])
    runs = job.build_runs(args)
    # seed-major order (every setting of seed 0 first), then the first n_runs
    runs.sort(key=lambda r: r.labels["seed"])
    return runs[:n_runs]


def results_table(out: Path):  # noqa: ANN201 - a pandas DataFrame
    import pandas as pd

    res = pd.read_csv(out / "results.csv")
    return res.drop(columns=[c for c in WALL_COLUMNS if c in res.columns])


def timed_grid(runs: list, out: Path, backend) -> float:  # noqa: ANN001
    from reasonlens.training.matching_runs import run_grid

    t = time.perf_counter()
    run_grid(runs, out, progress=False, backend=backend)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    cli.prepare(p)
    p.add_argument(
        "--runs", type=cli.positive_int, default=None, help="runs in the grid (default 4; 2 with --quick)"
    )
    p.add_argument(
        "--steps", type=cli.positive_int, default=None, help="steps per run (default 100; 6 with --quick)"
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny models, 2 runs, a few steps: a smoke run in seconds"
    )
    args = p.parse_args(argv)
    n_runs = args.runs or (2 if args.quick else 4)
    steps = args.steps or (6 if args.quick else 100)  # 300 ran past 10 minutes here (bf16, 2 cores)
    cores = os.cpu_count() or 1

    import pandas as pd
    import torch

    from reasonlens.training.grid import Backend

    runs = build_grid(n_runs, steps, args.quick)
    workers = max(1, min(cores, len(runs)))
    walls: dict[str, float | None] = {}
    tables = {}
    ray_startup = None
    with tempfile.TemporaryDirectory(prefix="grid_throughput_") as tmp:
        tmp = Path(tmp)
        walls["serial"] = timed_grid(runs, tmp / "serial", Backend(workers=1, threads=cores))
        tables["serial"] = results_table(tmp / "serial")
        walls["serial_1"] = timed_grid(runs, tmp / "serial_1", Backend(workers=1, threads=1))
        tables["serial_1"] = results_table(tmp / "serial_1")
        walls["workers"] = timed_grid(runs, tmp / "workers", Backend(workers=workers, threads=1))
        tables["workers"] = results_table(tmp / "workers")
        try:
            import ray
        except ImportError:
            ray = None
            print('Ray is not installed (pip install -e ".[ray]"): skipping the Ray backend', file=sys.stderr)
        if ray is not None:
            t = time.perf_counter()
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            ray_startup = time.perf_counter() - t
            try:
                walls["ray"] = timed_grid(runs, tmp / "ray", Backend(workers=workers, ray="", threads=1))
            finally:
                ray.shutdown()
            tables["ray"] = results_table(tmp / "ray")
        else:
            walls["ray"] = None

    # runs with the same per-run thread count must agree exactly; the all-threads baseline may not
    base = tables["serial_1"]
    same_threads = [t for k, t in tables.items() if k != "serial"]
    same = all(t.shape == base.shape and t.equals(base) for t in same_threads)
    differing = sorted(
        {c for t in same_threads if t.shape == base.shape for c in base.columns if not t[c].equals(base[c])}
    )
    numeric = [c for c in base.columns if pd.api.types.is_float_dtype(base[c])]
    serial_diff = (
        float((tables["serial"][numeric] - base[numeric]).abs().max().max())
        if tables["serial"].shape == base.shape and numeric
        else None
    )
    speedup = {k: (walls["serial"] / v if v else None) for k, v in walls.items()}

    shape = runs[0].model
    print(
        f"machine: {cores} cores, torch {torch.__version__}; grid: {len(runs)} runs x {steps} steps, "
        f"{shape.n_layers} layers, d_model {shape.d_model}, d_mlp {shape.d_mlp}, "
        f"batch {runs[0].train.batch_size}, bf16 {'yes' if runs[0].train.bf16 else 'no'}"
    )
    labels = {
        "serial": "serial (1 process, all threads)",
        "serial_1": "serial (1 process, 1 thread)",
        "workers": f"{workers} local workers, 1 thread each",
        "ray": f"local Ray, {workers} CPUs",
    }
    print(f"{'backend':<36}{'wall s':>9}{'vs serial':>11}")
    for k, wall in walls.items():
        if wall is None:
            print(f"{labels[k]:<36}{'-':>9}{'-':>11}")
        else:
            print(f"{labels[k]:<36}{wall:>9.1f}{speedup[k]:>10.2f}x")
    if ray_startup is not None:
        print(f"ray.init (not in Ray's wall): {ray_startup:.1f} s")
    verdict = "yes" if same else "NO (differ: " + ", ".join(differing) + ")"
    print(f"same results, 1 thread a run (serial, workers, Ray): {verdict}")
    if serial_diff is not None:
        print(f"all-threads serial vs 1 thread a run: largest result difference {serial_diff:.2g}")
    ray_vs_workers = walls["ray"] / walls["workers"] if walls["ray"] else None
    out = {
        "speedup_workers": speedup["workers"],
        "speedup_ray": speedup["ray"],
        "speedup_workers_vs_one_thread": walls["serial_1"] / walls["workers"],
        "serial_1thread_s": walls["serial_1"],
        "ray_startup_s": ray_startup,
        "serial_s": walls["serial"],
        "workers_s": walls["workers"],
        "ray_s": walls["ray"],
        "ray_vs_workers": ray_vs_workers,
        "n_runs": len(runs),
        "steps": steps,
        "cores": cores,
        "workers": workers,
        "quick": args.quick,
        "same_results": same,
        "differing_columns": differing,
        "serial_max_abs_diff": serial_diff,
        "targets_met": {
            "speedup_workers>=1.6": speedup["workers"] >= 1.6,
            "ray_s<=1.1*workers_s": bool(ray_vs_workers is not None and ray_vs_workers <= 1.1),
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(cli.run(main))
