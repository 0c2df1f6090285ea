"""Main job: does small initialisation with post-LayerNorm form the matching mechanism?

Wang et al. (2024) report that transformers learn the multi-step "matching" task (and generalise to
unseen pairs and OOD tokens) when initialised small and normalised after each residual addition
(post-LN). This script trains matching Type 1 (single chain, k=2 hops, seq_len 13) over a grid of
init rates gamma x {pre-LN, post-LN} x seeds (3 by default) and reports final train/test/OOD
accuracy, mean +- sd over seeds per cell, and how many seeds reached 99% test accuracy and when.
Training precision (fp32 or bf16 autocast) is chosen by timing both here (--precision auto) and
reported. OOD remedies to measure: --embed-init-scale starts the token embedding larger,
--no-embed-decay exempts the embeddings from weight decay.

    python experiments/matching_init.py                 # CPU defaults (see --help): 12 runs
    python experiments/matching_init.py --quick         # seconds: a smoke run
    python experiments/matching_init.py --preset paper --device cuda   # the authors' configuration

Outputs under --out (default figures/matching_init/): results.csv (one row per run, with its
precision), summary.csv (one row per gamma x norm cell), curves.csv (accuracy per split and the
``embedding`` split's ID/OOD/position norms over training), runs/<run>/ (model checkpoint, metrics,
resumable state), accuracy_vs_gamma.html, learning_curves.html, embedding_norms.html (+ .png when
a Chromium is installed). Re-running skips finished runs (resumes unfinished ones) unless --force.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from reasonlens import cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.grid_parser(__doc__)
    p.add_argument(
        "--gammas",
        type=cli.nonneg_float,
        nargs="+",
        help="init rates (std = d_in^-gamma); preset's if omitted",
    )
    p.add_argument("--norms", nargs="+", choices=["pre", "post", "none"], help="LayerNorm placements")
    p.add_argument("--seeds", type=cli.seed, nargs="+", help="seeds (model init and data)")
    p.add_argument("--steps", type=cli.positive_int, help="optimizer steps per run (overrides the preset)")
    p.add_argument("--init", choices=["normal", "uniform"], help="init distribution (overrides the preset)")
    p.add_argument("--lr", type=cli.positive_float, help="peak learning rate (overrides the preset)")
    p.add_argument("--batch-size", type=cli.positive_int, help="sequences per step (overrides the preset)")
    p.add_argument(
        "--eval-every", type=cli.positive_int, help="steps between evaluations (overrides the preset)"
    )
    p.add_argument("--no-early-stop", action="store_true", help="always train the full number of steps")
    p.add_argument(
        "--embed-init-scale",
        type=cli.positive_float,
        default=1.0,
        help="multiply the token embedding's init scale (OOD remedy: untrained rows start larger)",
    )
    p.add_argument(
        "--no-embed-decay",
        action="store_true",
        help="no weight decay on the token and position embeddings (an OOD remedy to measure)",
    )
    p.add_argument("--fp32", action="store_true", help="same as --precision fp32")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, or auto")
    p.add_argument("--out", type=cli.out_dir, default=Path("figures/matching_init"), help="output directory")
    p.add_argument("--force", action="store_true", help="retrain runs that already have results")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--html-only", action="store_true", help="skip the PNG copies of the figures (faster)")
    cli.add_backend_options(p)
    args = p.parse_args(argv)
    for name in ("gammas",):
        for g in getattr(args, name) or ():
            if not g >= 0:
                p.error(f"--gammas: every gamma must be >= 0; got {g}")
    if args.steps is not None and args.steps < 1:
        p.error(f"--steps must be >= 1; got {args.steps}")
    if args.lr is not None and not args.lr > 0:
        p.error(f"--lr must be > 0; got {args.lr}")
    return args


if __name__ == "__main__":
    parse_args()  # --help and bad arguments are answered here, before the heavy imports below

import pandas as pd  # noqa: E402

from reasonlens.io import write_csv  # noqa: E402
from reasonlens.models import ModelConfig, init_std  # noqa: E402
from reasonlens.plots import save_figure  # noqa: E402
from reasonlens.plots.report import report_files, write_report  # noqa: E402
from reasonlens.plots.training import accuracy_vs_setting, learning_curves  # noqa: E402
from reasonlens.training.grid import backend_from_args  # noqa: E402
from reasonlens.training.matching_runs import (  # noqa: E402
    MatchingRun,
    grid_train_config,
    lr_std_note,
    resolve_precision,
    run_grid,
    seed_summary,
)
from reasonlens.training.presets import MATCHING_INIT_PRESETS  # noqa: E402


def build_runs(args: argparse.Namespace) -> list[MatchingRun]:
    preset = MATCHING_INIT_PRESETS["quick" if args.quick else args.preset]
    overrides = {
        k: v
        for k, v in dict(
            gammas=args.gammas,
            norms=args.norms,
            seeds=args.seeds,
            steps=args.steps,
            init=args.init,
            lr=args.lr,
            batch_size=args.batch_size,
            eval_every=args.eval_every,
        ).items()
        if v is not None
    }
    for k in ("gammas", "norms", "seeds"):
        if k in overrides:
            overrides[k] = tuple(dict.fromkeys(overrides[k]))  # drop repeats, keep order
    if args.no_early_stop:
        overrides["solved_patience"] = None
    pr = replace(preset, **overrides)
    runs = []
    for norm in pr.norms:
        for gamma in pr.gammas:
            for seed in pr.seeds:
                model = ModelConfig(
                    n_layers=pr.n_layers,
                    n_heads=1,
                    d_model=pr.d_model,
                    d_head=pr.d_head,
                    d_mlp=pr.d_mlp,
                    d_vocab=201,
                    n_ctx=13,
                    act_fn="relu",
                    norm=norm,
                    init=pr.init,
                    gamma=gamma,
                    seed=seed,
                    embed_init_scale=args.embed_init_scale,
                )
                train = grid_train_config(
                    pr, seed=seed, device=args.device, progress=not args.no_progress,
                    desc=f"g{gamma:g}-{norm}-s{seed}",
                )  # fmt: skip
                train = replace(train, decay_embeddings=not args.no_embed_decay)
                suffix = "" if args.embed_init_scale == 1.0 else f"_e{args.embed_init_scale:g}"
                suffix += "_nd" if args.no_embed_decay else ""
                runs.append(
                    MatchingRun(
                        name=f"g{gamma:g}_{norm}{suffix}_s{seed}",
                        model=model,
                        train=train,
                        n_train=pr.n_train,
                        n_eval=pr.n_eval,
                        data_seed=seed,
                        solved_patience=pr.solved_patience,
                        labels={
                            "gamma": gamma,
                            "norm": norm,
                            "seed": seed,
                            "embed_init_scale": args.embed_init_scale,
                            "decay_embeddings": not args.no_embed_decay,
                            "lr_over_std": train.lr / init_std(model, model.d_model),
                        },  # fmt: skip
                    )
                )
    return runs


def summarize(results: pd.DataFrame, table: pd.DataFrame) -> str:
    """The per-cell table (:func:`seed_summary`: mean +- sd over seeds, seeds reaching 99% and
    their steps) and the comparison the paper makes."""
    shown = pd.DataFrame({"norm": table.norm, "gamma": table.gamma, "seeds": table.n_seeds})
    for s in ("train", "test", "ood"):
        shown[s] = [
            f"{m:.3f}" + ("" if pd.isna(sd) else f" +- {sd:.3f}")
            for m, sd in zip(table[f"{s}_acc_mean"], table[f"{s}_acc_sd"])
        ]
    shown["reached_99"] = [f"{r}/{n}" for r, n in zip(table.reached_99, table.n_seeds)]
    shown["step_99 (seed:step)"] = table.step_99_by_seed
    lines = [shown.to_string(index=False)]
    if {"pre", "post"} <= set(results.norm) and results.gamma.nunique() > 1:
        small, large = results.gamma.max(), results.gamma.min()
        cell = lambda n, g: results[(results.norm == n) & (results.gamma == g)]  # noqa: E731
        sp = cell("post", small)
        others = results[~((results.norm == "post") & (results.gamma == small))]
        lines.append(
            f"\nsmall init (gamma={small:g}) + post-LN: test {sp.test_acc.mean():.3f}, "
            f"OOD {sp.ood_acc.mean():.3f}; every other setting: test {others.test_acc.mean():.3f}, "
            f"OOD {others.ood_acc.mean():.3f} (means)."
        )
        for n in ("pre", "post"):
            a, b = cell(n, small), cell(n, large)
            lines.append(
                f"{n}-LN: gamma={small:g} test {a.test_acc.mean():.3f} / OOD {a.ood_acc.mean():.3f}  vs  "
                f"gamma={large:g} test {b.test_acc.mean():.3f} / OOD {b.ood_acc.mean():.3f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        runs = build_runs(args)  # validates every setting before any training
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
    print(f"{len(runs)} runs on {backend.describe()} -> {args.out}", file=sys.stderr)
    print(precision.describe(), file=sys.stderr)
    print(lr_std_note(runs), file=sys.stderr)
    results, curves = run_grid(
        runs, args.out, force=args.force, progress=not args.no_progress, backend=backend
    )
    table = seed_summary(results)
    written = [args.out / "results.csv", args.out / "curves.csv", write_csv(table, args.out / "summary.csv")]
    written += save_figure(
        accuracy_vs_setting(results, title="Matching Type 1 (k=2): final accuracy vs init rate"),
        args.out,
        "accuracy_vs_gamma",
        static=() if args.html_only else ("png",),
    )
    written += save_figure(
        learning_curves(curves, title="Matching Type 1 (k=2): accuracy during training"),
        args.out,
        "learning_curves",
        static=() if args.html_only else ("png",),
    )
    if "embedding" in set(curves.split):
        written += save_figure(
            learning_curves(
                curves, metric="ood_id_ratio", splits=("embedding",),
                title="OOD / ID token-embedding norm during training (1: OOD rows as large as trained ones)",
            ),
            args.out,
            "embedding_norms",
        )  # fmt: skip
    print(summarize(results, table))
    print(lr_std_note(runs))
    print(precision.describe())
    elapsed = time.perf_counter() - t0
    print(f"\n{len(runs)} runs in {elapsed:.0f} s (each run's own training time is in results.csv)")
    written.append(write_report(
        args.out, title="Matching Type 1: initialisation and LayerNorm placement",
        question=__doc__.split("\n\n")[0], config=vars(args), headline=table,
        notes=[summarize(results, table), precision.describe()], **report_files(written),
    ))  # fmt: skip
    print(
        "wrote:\n  "
        + "\n  ".join(str(p) for p in written)
        + f"\n  {args.out / 'runs'}/<run>/model.safetensors"
    )
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
