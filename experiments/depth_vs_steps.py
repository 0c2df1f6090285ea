"""How many reasoning steps does a model of a given depth resolve in one forward pass?

Serial matching needs k + 1 attention layers for k steps (one layer pairs each child with its
parent, each further layer follows one hop). Tian, Chen, Wang and Xu (arXiv 2509.23178) show that
with L layers a single pass can resolve between 2^(L-1) - 1 and (3^(L-1) - 1)/2 steps when the
pairs are favourably ordered. This script trains models with L layers on single-chain matching
with k steps (k = 1 up to just past the upper bound, capped by the preset), with the pairs in
random order and in a favourable order, and maps final accuracy over (L, k).

Favourable order ("path_reverse"): the k pairs on the query's path appear in reverse hop order
(the last hop's pair leftmost) at otherwise random slots. A causal model reads left to right, so
every path pair can then attend to the pair of the hop after it, which is already to its left,
and extend the link it holds (x -> y becomes x -> z), while its own parent x stays the key the
query matches on; links can double in length with every layer. The other pairs stay random, so
the answer is never at a fixed offset from the query's pair (with the whole chain sorted it would
be, and a 2-layer model could read it off by position).

    python experiments/depth_vs_steps.py              # CPU defaults (see --help and training/presets.py)
    python experiments/depth_vs_steps.py --quick      # seconds: a smoke run
    python experiments/depth_vs_steps.py --preset paper --device cuda   # L = 2..5, full k range

Each example: a chain of k + MARGIN pairs (MARGIN off-path pairs beyond the hops) plus the query;
seq_len = 2 (k + margin) + 1. ``accuracy`` is answer accuracy on fresh in-distribution examples;
test (unseen pairs) and OOD accuracies are kept as well, and ``acc_other_order``: the accuracy of
each model on the other order (a favourable-order model that only exploits the order drops to about
``order_only_share`` = 1/k! on random order). Outputs under --out (default
figures/depth_vs_steps/): results.csv (one row per run: n_layers, k, order, seed, accuracy, ...),
curves.csv, runs/<run>/ (checkpoints), heatmap.html (+ heatmap_test.html) with the serial line and
both parallel bounds, and, for the run that beats the serial bound by the most steps (if any):
probes.csv / attention.csv and their figures (which layer makes which hop readable at the query).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

from reasonlens import cli

ORDER_NAMES = {"random": "random", "favourable": "path_reverse"}  # CLI name -> generator order


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.grid_parser(__doc__)
    p.add_argument(
        "--layers", type=cli.positive_int, nargs="+", help="numbers of layers L (preset's if omitted)"
    )
    p.add_argument("--k-max", type=cli.positive_int, help="cap on the number of steps k")
    p.add_argument("--orders", nargs="+", choices=sorted(ORDER_NAMES), help="pair orders")
    p.add_argument("--seeds", type=cli.seed, nargs="+", help="seeds (model init and data)")
    p.add_argument("--steps", type=cli.positive_int, help="optimizer steps per run (overrides the preset)")
    p.add_argument("--lr", type=cli.positive_float, help="peak learning rate (overrides the preset)")
    p.add_argument("--norm", choices=["pre", "post", "none"], help="LayerNorm placement")
    p.add_argument("--margin", type=cli.nonneg_int, help="off-path pairs per example beyond the k hops")
    p.add_argument("--no-early-stop", action="store_true", help="always train the full number of steps")
    p.add_argument("--no-analysis", action="store_true", help="skip the probes of the best run")
    p.add_argument("--fp32", action="store_true", help="same as --precision fp32")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, or auto")
    p.add_argument("--out", type=cli.out_dir, default=Path("figures/depth_vs_steps"), help="output directory")
    p.add_argument("--force", action="store_true", help="retrain runs that already have results")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--html-only", action="store_true", help="skip the PNG copies of the figures (faster)")
    cli.add_backend_options(p)
    args = p.parse_args(argv)
    for layer in args.layers or ():
        if layer < 1:
            p.error(f"--layers: every L must be >= 1; got {layer}")
    if args.k_max is not None and args.k_max < 1:
        p.error(f"--k-max must be >= 1; got {args.k_max}")
    if args.steps is not None and args.steps < 1:
        p.error(f"--steps must be >= 1; got {args.steps}")
    if args.lr is not None and not args.lr > 0:
        p.error(f"--lr must be > 0; got {args.lr}")
    if args.margin is not None and args.margin < 0:
        p.error(f"--margin must be >= 0; got {args.margin}")
    return args


if __name__ == "__main__":
    parse_args()  # --help and bad arguments are answered here, before the heavy imports below

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from reasonlens.analysis import attention_matching_scores  # noqa: E402
from reasonlens.io import write_csv, write_json  # noqa: E402
from reasonlens.models import ModelConfig, Transformer  # noqa: E402
from reasonlens.plots import attention_figure, probe_figure, save_figure  # noqa: E402
from reasonlens.plots.common import checkpoint_identity, with_run_identity  # noqa: E402
from reasonlens.plots.interventions import depth_heatmap, parallel_bounds, serial_bound  # noqa: E402
from reasonlens.plots.report import report_files, write_report  # noqa: E402
from reasonlens.probes import probe_sweep  # noqa: E402
from reasonlens.probes.collect import hook_label, ordered_hooks, resid_hooks  # noqa: E402
from reasonlens.tasks import matching  # noqa: E402
from reasonlens.training import evaluate_lm  # noqa: E402
from reasonlens.training.grid import backend_from_args  # noqa: E402
from reasonlens.training.matching_runs import MatchingRun, grid_train_config, resolve_precision, run_grid  # noqa: E402
from reasonlens.training.presets import (  # noqa: E402
    DEPTH_VS_STEPS_PRESETS,
    DepthVsStepsPreset,
    k_range,
    task_seq_len,
)


def resolve_preset(args: argparse.Namespace) -> DepthVsStepsPreset:
    preset = DEPTH_VS_STEPS_PRESETS["quick" if args.quick else args.preset]
    overrides = {
        k: v
        for k, v in dict(
            layers=tuple(dict.fromkeys(args.layers)) if args.layers else None,
            k_max=args.k_max, steps=args.steps, lr=args.lr, norm=args.norm, margin=args.margin,
            orders=tuple(dict.fromkeys(args.orders)) if args.orders else None,
            seeds=tuple(dict.fromkeys(args.seeds)) if args.seeds else None,
        ).items()
        if v is not None
    }  # fmt: skip
    if args.no_early_stop:
        overrides["solved_patience"] = None
    if "lr" in overrides and preset.schedule == "constant":
        overrides["min_lr"] = overrides["lr"]
    return replace(preset, **overrides)


def build_runs(pr: DepthVsStepsPreset, args: argparse.Namespace) -> list[MatchingRun]:
    runs = []
    for n_layers in pr.layers:
        for k in k_range(n_layers, pr.k_max, pr.k_past):
            seq_len = task_seq_len(k, pr.margin)
            for order in pr.orders:
                for seed in pr.seeds:
                    model = ModelConfig(
                        n_layers=n_layers, n_heads=pr.n_heads, d_model=pr.d_model, d_head=pr.d_head,
                        d_mlp=pr.d_mlp, n_ctx=seq_len, norm=pr.norm,
                        d_vocab=matching.vocab_size("single_chain", seq_len, pr.n_tokens),
                        init=pr.init, gamma=pr.gamma, seed=seed,
                    )  # fmt: skip
                    train = grid_train_config(
                        pr, seed=seed, device=args.device, progress=not args.no_progress,
                        desc=f"L{n_layers} k{k} {order} s{seed}",
                    )  # fmt: skip
                    lower, upper = parallel_bounds(n_layers)
                    runs.append(
                        MatchingRun(
                            name=f"L{n_layers}_k{k}_{order}_s{seed}", model=model, train=train,
                            steps=k, seq_len=seq_len, order=ORDER_NAMES[order], n_tokens=pr.n_tokens,
                            n_eval=pr.n_eval, data_seed=seed, solved_patience=pr.solved_patience,
                            labels={"n_layers": n_layers, "k": k, "order": order, "seed": seed,
                                    "serial_bound": serial_bound(n_layers), "lower_bound": lower,
                                    "upper_bound": upper},
                        )
                    )  # fmt: skip
    return runs


@torch.no_grad()
def add_cross_order_accuracy(results: pd.DataFrame, pr: DepthVsStepsPreset, out: Path) -> pd.DataFrame:
    """Each model's accuracy on the *other* order (favourable models on random order and vice
    versa), on fresh in-distribution examples, and ``order_only_share``: the fraction of random-order
    examples whose hop pairs happen to sit in reverse hop order (1 / k!). A favourable-order model
    that relies on the order scores about that share (plus guesses) on random order; one that
    matches pairs wherever they are keeps its accuracy."""
    other = {"random": "favourable", "favourable": "random"}
    accs = []
    for row in results.itertuples():
        k, seq_len = int(row.k), task_seq_len(int(row.k), pr.margin)
        data = matching.generate(
            pr.n_eval, "train", k, seq_len, seed=(int(row.seed), 13), n_tokens=pr.n_tokens,
            order=ORDER_NAMES[other[row.order]],
        )  # fmt: skip
        accs.append(evaluate_lm(Transformer.load(out / row.checkpoint), data.batch())["accuracy"])
    return results.assign(
        acc_other_order=accs, order_only_share=[1.0 / math.factorial(int(k)) for k in results.k]
    )


def pick_beyond_serial(results: pd.DataFrame, threshold: float) -> pd.Series | None:
    """The run that beats the serial bound k = L - 1 by the most steps with accuracy >=
    ``threshold`` (ties: higher accuracy, then fewer layers); None if no run does."""
    beyond = results[(results.k > results.serial_bound) & (results.accuracy >= threshold)]
    if beyond.empty:
        return None
    beyond = beyond.assign(excess=beyond.k - beyond.serial_bound)
    return beyond.sort_values(["excess", "accuracy", "n_layers"], ascending=[False, False, True]).iloc[0]


def analyse_run(row: pd.Series, pr: DepthVsStepsPreset, out: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Probes for every hop target at the query, per residual site, and attention matching scores,
    on fresh examples of the run's own task."""
    model = Transformer.load(out / row.checkpoint)
    model.eval()
    k, seq_len = int(row.k), task_seq_len(int(row.k), pr.margin)
    data = matching.generate(
        pr.probe_examples, "train", k, seq_len, seed=(int(row.seed), 11), n_tokens=pr.n_tokens,
        order=ORDER_NAMES[row.order],
    )  # fmt: skip
    targets = [f"hop{j}" for j in range(k + 1)]
    probes = probe_sweep(model, data, targets=targets, positions=[data.query_pos], seed=int(row.seed))
    attention = attention_matching_scores(model, data)
    at = probes.set_index(["hook", "target"]).score
    hooks = ordered_hooks(resid_hooks(model.cfg.n_layers))
    first = {}
    for t in targets:
        reached = [h for h in hooks if at[(h, t)] >= 0.9]
        first[t] = hook_label(reached[0]) if reached else None
    summary = {
        "run": row.run, "n_layers": int(row.n_layers), "k": k, "order": row.order,
        "accuracy": float(row.accuracy), "probe_examples": pr.probe_examples,
        "hop_first_site_at_query": first,
        "hop_probe_by_site": {
            t: {hook_label(h): round(float(at[(h, t)]), 4) for h in hooks} for t in targets
        },
    }  # fmt: skip
    return probes, attention, summary


def accuracy_grid(results: pd.DataFrame, value: str = "accuracy") -> str:
    """Mean ``value`` over seeds as an L x k table per order."""
    parts = []
    for order, d in results.groupby("order", sort=False):
        grid = d.groupby(["n_layers", "k"])[value].mean().unstack("k")
        title = f"trained on order = {order} ({value}, mean over seeds)"
        parts.append(title + "\n" + grid.to_string(float_format=lambda v: f"{v:.3f}"))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pr = resolve_preset(args)
    try:
        runs = build_runs(pr, args)  # validates every task and model before any training
        backend = backend_from_args(args, len(runs))
        runs, precision = resolve_precision(
            runs,
            "fp32" if args.fp32 else args.precision,
            None if args.force else args.out / "runs",  # --force retrains: time afresh
            threads=backend.run_threads(),
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    out = args.out
    print(f"{len(runs)} runs on {backend.describe()} -> {out}", file=sys.stderr)
    print(precision.describe(), file=sys.stderr)
    results, curves = run_grid(runs, out, force=args.force, progress=not args.no_progress, backend=backend)
    results["accuracy"] = results["train_acc"]  # fresh in-distribution examples
    results = add_cross_order_accuracy(results, pr, out)
    write_csv(results, out / "results.csv")
    written = [out / "results.csv", out / "curves.csv"]
    static = () if args.html_only else ("png",)
    written += save_figure(depth_heatmap(results), out, "heatmap", static=static)
    written += save_figure(
        depth_heatmap(results, value="test_acc", title="test accuracy (unseen pairs) by depth and steps"),
        out, "heatmap_test", static=static,
    )  # fmt: skip
    print(accuracy_grid(results))
    print("\n" + accuracy_grid(results, "acc_other_order"))
    best = None if args.no_analysis else pick_beyond_serial(results, pr.probe_threshold)
    if best is None and not args.no_analysis:
        print(f"\nno run beats the serial bound k = L - 1 with accuracy >= {pr.probe_threshold}: no probes")
        write_json({"beyond_serial": None, "threshold": pr.probe_threshold}, out / "analysis.json")
    elif best is not None:
        probes, attention, summary = analyse_run(best, pr, out)
        written += [write_csv(probes, out / "probes.csv"), write_csv(attention, out / "attention.csv")]
        written.append(
            write_json({"beyond_serial": summary, "threshold": pr.probe_threshold}, out / "analysis.json")
        )
        path = out / best.checkpoint
        identity = [f"{best.run}: " + checkpoint_identity(path)]
        probe_fig = with_run_identity(probe_figure(probes, facet=None), identity)
        written += save_figure(probe_fig, out, "probes", static=static)
        written += save_figure(with_run_identity(attention_figure(attention), identity), out, "attention",
                               static=static)  # fmt: skip
        where = f"L={best.n_layers}, k={best.k}, accuracy {best.accuracy:.3f}"
        print(f"\nbeyond the serial bound: {best.run} ({where})")
        print("first residual site where hop j is linearly readable at the query (probe >= 0.9):")
        for t, site in summary["hop_first_site_at_query"].items():
            print(f"  {t}: {site}")
    print(
        f"\n{len(runs)} runs in {time.perf_counter() - t0:.0f} s (each run's training time is in results.csv)"
    )
    metrics = [c for c in ("accuracy", "test_acc", "acc_other_order") if c in results.columns]
    written.append(write_report(
        out, title="Depth vs reasoning steps (matching)", question=__doc__.split("\n\n")[0],
        config={**vars(args), "preset_values": pr}, notes=[accuracy_grid(results), precision.describe()],
        headline=results.groupby(["order", "n_layers", "k"], sort=False, as_index=False)[metrics].mean(),
        **report_files(written),
    ))  # fmt: skip
    print("wrote:\n  " + "\n  ".join(str(p) for p in written) + f"\n  {out / 'runs'}/<run>/model.safetensors")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
