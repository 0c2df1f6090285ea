"""Probe-sweep speed and peak memory: ``probe_sweep`` against the naive way, in one run.

The sweep: every residual-stream site (the input of block 0 and the output of every block) x every
position x the five matching targets (hop0, hop1, hop2, parent, token), each with its shuffled-label
control, on a 3-layer matching model and N test-split examples (80/20 example split).

- ours: ``reasonlens.probes.probe_sweep`` with its defaults: one batched forward pass caching only
  the probed hooks, streamed to a temporary on-disk store, closed-form probes (linear discriminant
  analysis for these categorical targets) from streamed sufficient statistics.
- naive: ``run_with_cache`` over every activation of the model (batches concatenated), then one
  scikit-learn fit per probe (StandardScaler + multinomial LogisticRegression), same split and
  controls.

Each measurement runs in a fresh subprocess; peak memory is that process's peak resident set size
(``ru_maxrss``), which includes the Python/torch baseline, reported alongside. The naive way at 4N is
run for memory only: it caches everything at 4N but fits the probes of one position, since all of its
fits would take many minutes. Threads are whatever the environment sets (e.g. OMP_NUM_THREADS).

The last line printed is one JSON object: speedup = naive time / our time at N; memory_growth_4x =
our peak RSS at 4N / our peak RSS at N. Ours is also measured with glibc's mmap threshold fixed
(MALLOC_MMAP_THRESHOLD_), which separates what the sweep holds from what the allocator keeps.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from reasonlens import cli

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def worker(args: argparse.Namespace) -> dict:
    """One measurement; returns its numbers (printed as JSON by the parent's subprocess)."""
    import torch

    from reasonlens.models import ModelConfig, Transformer
    from reasonlens.probes import matching_targets, probe_sweep, resid_hooks, split_examples
    from reasonlens.probes.linear import make_label_sets, sklearn_probe
    from reasonlens.tasks import matching

    if args.checkpoint:
        model = Transformer.load(args.checkpoint)
    else:
        cfg = ModelConfig(
            n_layers=3, d_model=128, d_mlp=512, n_ctx=13, d_vocab=201, norm="post", seed=args.seed
        )
        model = Transformer(cfg)
    model.eval()
    data = matching.generate(args.n, "test", seed=(args.seed, 1))
    targets = matching_targets(data)
    baseline = current_rss_mb()
    t0 = time.perf_counter()
    if args.worker == "ours":
        df = probe_sweep(model, data, targets, seed=args.seed)
        scores = {(r.hook, r.position, r.target, c): v for r in df.itertuples()
                  for c, v in ((False, r.score), (True, r.control_score))}  # fmt: skip
    else:
        cache = {}
        with torch.no_grad():
            for start in range(0, args.n, 1000):
                _, c = model.run_with_cache(data.inputs[start : start + 1000])
                for name, act in c.items():
                    cache.setdefault(name, []).append(act)
        cache = {name: torch.cat(acts) for name, acts in cache.items()}
        hooks = resid_hooks(model.cfg.n_layers)
        positions = list(range(data.seq_len)) if not args.one_position else [data.seq_len - 1]
        is_test = split_examples(args.n, 0.2, args.seed)
        sets, masks = make_label_sets(targets, args.n, list(range(data.seq_len)), args.seed)
        scores = {}
        for hook in hooks:
            for position in positions:
                X = cache[hook][:, position].double().numpy()
                for s in sets:
                    valid = masks[s.group][:, position]
                    fit = sklearn_probe(X, s.values[:, position], valid, is_test, s.categorical)
                    scores[(hook, position, s.target, s.control)] = fit["score"]
        del cache
    elapsed = time.perf_counter() - t0
    return {
        "time_s": elapsed, "peak_mb": peak_rss_mb(), "baseline_mb": baseline, "n_probes": len(scores),
        "scores": [[*key, round(float(v), 6)] for key, v in scores.items()],
    }  # fmt: skip


def measure(
    kind: str, n: int, args: argparse.Namespace, one_position: bool = False, env: dict | None = None
) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--n", str(n), "--seed", str(args.seed)]
    if args.checkpoint:
        cmd += ["--checkpoint", str(args.checkpoint)]
    if one_position:
        cmd.append("--one-position")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})})
    if proc.returncode == cli.EXIT_ERROR:  # the worker met an expected error: pass its line on
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
        raise ValueError(lines[-1][len("error: ") :] if lines else proc.stderr.strip()[-500:])
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    what = f"{kind:5s} n={n:6d}" + (" (memory only: fits at 1 position)" if one_position else "")
    what += " (MALLOC_MMAP_THRESHOLD_ fixed)" if env else ""
    print(
        f"{what}: {result['time_s']:8.2f} s, peak RSS {result['peak_mb']:7.0f} MB "
        f"(before the sweep {result['baseline_mb']:.0f} MB), {result['n_probes']} probe scores",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.prepare(p)
    p.add_argument(
        "--examples", type=cli.positive_int, default=2500, help="N, the examples at 1x (default 2500)"
    )
    p.add_argument("--checkpoint", type=Path, help="a trained model file (default: a fresh 3-layer model)")
    p.add_argument("--seed", type=cli.seed, default=0)
    p.add_argument("--skip-naive-4x", action="store_true", help="skip the naive 4N memory measurement")
    p.add_argument("--worker", choices=("ours", "naive"), help=argparse.SUPPRESS)
    p.add_argument("--n", type=cli.positive_int, help=argparse.SUPPRESS)
    p.add_argument("--one-position", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.examples < 100:
        p.error(f"--examples must be at least 100; got {args.examples}")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        p.error(f"--checkpoint: no model file at {args.checkpoint}")
    n = args.examples
    print(f"probe sweep benchmark: N={n}, model={args.checkpoint or 'fresh 3-layer d_model 128 post-LN'}")
    ours = measure("ours", n, args)
    ours4 = measure("ours", 4 * n, args)
    naive = measure("naive", n, args)
    naive4 = None if args.skip_naive_4x else measure("naive", 4 * n, args, one_position=True)
    # glibc raises its mmap threshold as large buffers are freed, after which freed heap memory is
    # kept rather than returned: peak RSS then creeps up with the number of batches, whatever the
    # program holds. A fixed threshold shows what the sweep itself needs.
    fixed = {"MALLOC_MMAP_THRESHOLD_": "131072"}
    ours_fixed, ours4_fixed = measure("ours", n, args, env=fixed), measure("ours", 4 * n, args, env=fixed)
    naive_scores = {tuple(row[:4]): row[4] for row in naive["scores"]}
    diff = {False: [], True: []}  # |ours - naive| for probes and for controls
    for *key, value in ours["scores"]:
        diff[key[3]].append(abs(value - naive_scores[tuple(key)]))
    report = {
        "examples": n,
        "n_probes": ours["n_probes"],
        "ours_time_s": round(ours["time_s"], 3),
        "naive_time_s": round(naive["time_s"], 3),
        "speedup": round(naive["time_s"] / ours["time_s"], 2),
        "ours_time_s_4x": round(ours4["time_s"], 3),
        "ours_peak_mb": round(ours["peak_mb"], 1),
        "ours_peak_mb_4x": round(ours4["peak_mb"], 1),
        "memory_growth_4x": round(ours4["peak_mb"] / ours["peak_mb"], 3),
        "ours_growth_above_baseline_4x": round(
            (ours4["peak_mb"] - ours4["baseline_mb"]) / max(ours["peak_mb"] - ours["baseline_mb"], 1e-9), 3
        ),
        "memory_growth_4x_fixed_mmap_threshold": round(ours4_fixed["peak_mb"] / ours_fixed["peak_mb"], 3),
        "naive_peak_mb": round(naive["peak_mb"], 1),
        "naive_peak_mb_4x_memory_only": round(naive4["peak_mb"], 1) if naive4 else None,
        "naive_memory_growth_4x": round(naive4["peak_mb"] / naive["peak_mb"], 3) if naive4 else None,
        "mean_abs_score_diff": round(sum(diff[False]) / len(diff[False]), 4),
        "mean_abs_control_diff": round(sum(diff[True]) / len(diff[True]), 4),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    sys.exit(cli.run(main))
