"""Does attention noise speed up learning the matching task where the plain model is slow?

Wang et al. (arXiv 2405.15302) propose adding random matrices to the attention weight products
("orthogonal noise" in v1, a random-matrix "buffer" algorithm in v2/v3; an identity-matrix variant
reportedly fails). Their exact formula is not public: we use our reading (ModelConfig docstring),
effective matrices W_Q W_K^T + a Z_QK and W_V W_O + a Z_OV per layer and head, Z Gaussian with unit
spectral norm. This script trains matching Type 1 (single chain, k=2, seq_len 13) in settings
where the plain model learns slowly or not at all, and compares the variants none / fixed (a few
strengths a) / learned (a trainable per layer, head and matrix, starting at a) / identity (Z = I)
over seeds: final train/test/OOD accuracy and the step at which test accuracy first reached 99%.

    python experiments/matching_noise.py                # CPU defaults (see --help and training/presets.py)
    python experiments/matching_noise.py --quick        # seconds: a smoke run
    python experiments/matching_noise.py --preset paper --device cuda
    python experiments/matching_noise.py --settings-from figures/matching_init   # slow cells there

Outputs under --out (default figures/matching_noise/): results.csv (one row per run: setting,
norm, gamma, variant, alpha, seed, final accuracies, step_99, ...), curves.csv, strengths.csv
(final noise strength per run, layer, head and matrix), noise_share.csv (how much of each trained
effective matrix is noise), runs/<run>/ (checkpoints), variants.html and learning_curves.html
(+ .png when a Chromium is installed). Re-running skips finished runs unless --force.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

from reasonlens import cli
from reasonlens.names import NOISES

Setting = tuple[str, float]  # (norm, gamma)
Variant = tuple[str, float]  # (noise, alpha)


def parse_setting(text: str) -> Setting:
    """``"post:1.0"`` -> ("post", 1.0)."""
    norm, sep, gamma = text.partition(":")
    if not sep or norm not in ("pre", "post", "none"):
        raise ValueError(f"a setting is NORM:GAMMA with NORM in pre/post/none, e.g. post:1.0; got {text!r}")
    try:
        g = float(gamma)
    except ValueError:
        raise ValueError(f"setting {text!r}: gamma {gamma!r} is not a number") from None
    if not math.isfinite(g) or g < 0:
        raise ValueError(f"setting {text!r}: gamma must be finite and >= 0")
    return norm, g


def parse_variant(text: str) -> Variant:
    """``"fixed:0.3"`` -> ("fixed", 0.3); ``"none"`` -> ("none", 0.0)."""
    noise, sep, alpha = text.partition(":")
    if noise not in NOISES:
        raise ValueError(f"a variant is NOISE[:ALPHA] with NOISE in {NOISES}; got {text!r}")
    if noise == "none":
        if sep and float(alpha or 0) != 0:
            raise ValueError(f"variant {text!r}: 'none' takes no strength")
        return "none", 0.0
    if not sep:
        raise ValueError(f"variant {text!r} needs a strength, e.g. {noise}:1.0")
    try:
        a = float(alpha)
    except ValueError:
        raise ValueError(f"variant {text!r}: strength {alpha!r} is not a number") from None
    if not math.isfinite(a) or a < 0 or (a == 0 and noise != "learned"):
        raise ValueError(f"variant {text!r}: strength must be finite and > 0 (>= 0 for learned)")
    return noise, a


def variant_label(noise: str, alpha: float) -> str:
    return "none" if noise == "none" else f"{noise} a={alpha:g}"


def settings_from_results(results_dir: Path) -> tuple[Setting, ...]:
    """The (norm, gamma) cells of a matching_init results.csv where fewer than half of the seeds
    reached 99% test accuracy: where the plain model learns slowly or not at all."""
    import pandas as pd  # here: parse_args calls this before the module's heavy imports

    path = results_dir / "results.csv"
    if not path.is_file():
        raise ValueError(f"--settings-from: no results.csv in {results_dir}")
    df = pd.read_csv(path)
    missing = {"norm", "gamma", "step_99"} - set(df.columns)
    if missing:
        raise ValueError(f"{path} lacks column(s) {sorted(missing)}")
    reached = df.assign(ok=df.step_99.notna()).groupby(["norm", "gamma"]).ok.mean()
    slow = tuple((str(n), float(g)) for (n, g), frac in reached.items() if frac < 0.5)
    if not slow:
        raise ValueError(f"{path}: every setting reached 99% test accuracy in most seeds; pass --settings")
    return slow


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.grid_parser(__doc__)
    p.add_argument("--settings", nargs="+", metavar="NORM:GAMMA", help="e.g. post:1.0 pre:1.0 (preset's)")
    p.add_argument(
        "--settings-from", type=Path, metavar="DIR",
        help="take the settings from a matching_init output: cells where < half the seeds reached 99%%",
    )  # fmt: skip
    p.add_argument(
        "--variants", nargs="+", metavar="NOISE[:ALPHA]",
        help="e.g. none fixed:0.3 fixed:1 learned:1 identity:1 (preset's if omitted)",
    )  # fmt: skip
    p.add_argument("--seeds", type=cli.seed, nargs="+", help="seeds (model init, noise matrices and data)")
    p.add_argument("--steps", type=cli.positive_int, help="optimizer steps per run (overrides the preset)")
    p.add_argument("--lr", type=cli.positive_float, help="peak learning rate (overrides the preset)")
    p.add_argument(
        "--d-model", type=cli.positive_int, help="model width (d_head follows it for the CPU preset)"
    )
    p.add_argument("--no-early-stop", action="store_true", help="always train the full number of steps")
    p.add_argument("--fp32", action="store_true", help="same as --precision fp32")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, or auto")
    p.add_argument("--out", type=cli.out_dir, default=Path("figures/matching_noise"), help="output directory")
    p.add_argument("--force", action="store_true", help="retrain runs that already have results")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--html-only", action="store_true", help="skip the PNG copies of the figures (faster)")
    cli.add_backend_options(p)
    args = p.parse_args(argv)
    try:
        args.settings = (
            tuple(dict.fromkeys(parse_setting(s) for s in args.settings)) if args.settings else None
        )
        args.variants = (
            tuple(dict.fromkeys(parse_variant(v) for v in args.variants)) if args.variants else None
        )
    except ValueError as err:
        p.error(str(err))
    if args.settings and args.settings_from:
        p.error("give --settings or --settings-from, not both")
    if args.settings_from is not None:
        try:
            args.settings = settings_from_results(args.settings_from)
        except ValueError as err:
            p.error(str(err))
    if args.steps is not None and args.steps < 1:
        p.error(f"--steps must be >= 1; got {args.steps}")
    if args.lr is not None and not args.lr > 0:
        p.error(f"--lr must be > 0; got {args.lr}")
    if args.d_model is not None and args.d_model < 4:
        p.error(f"--d-model must be >= 4; got {args.d_model}")
    return args


if __name__ == "__main__":
    parse_args()  # --help and bad arguments are answered here, before the heavy imports below

import pandas as pd  # noqa: E402

from reasonlens.interventions import noise_share, noise_strengths  # noqa: E402
from reasonlens.io import write_csv  # noqa: E402
from reasonlens.models import ModelConfig, Transformer  # noqa: E402
from reasonlens.plots import save_figure  # noqa: E402
from reasonlens.plots.interventions import variant_comparison  # noqa: E402
from reasonlens.plots.report import report_files, write_report  # noqa: E402
from reasonlens.plots.training import learning_curves  # noqa: E402
from reasonlens.training.grid import backend_from_args  # noqa: E402
from reasonlens.training.matching_runs import (  # noqa: E402
    MatchingRun,
    grid_train_config,
    resolve_precision,
    run_grid,
)
from reasonlens.training.presets import MATCHING_NOISE_PRESETS  # noqa: E402


def build_runs(args: argparse.Namespace) -> list[MatchingRun]:
    preset = MATCHING_NOISE_PRESETS["quick" if args.quick else args.preset]
    overrides = {
        k: v
        for k, v in dict(
            settings=args.settings, variants=args.variants, steps=args.steps, lr=args.lr,
            seeds=tuple(dict.fromkeys(args.seeds)) if args.seeds else None,
        ).items()
        if v is not None
    }  # fmt: skip
    if args.d_model is not None:
        overrides.update(d_model=args.d_model, d_mlp=4 * args.d_model)
        if preset.d_head == preset.d_model:
            overrides["d_head"] = args.d_model
    if args.no_early_stop:
        overrides["solved_patience"] = None
    pr = replace(preset, **overrides)
    runs = []
    for norm, gamma in pr.settings:
        setting = f"{norm}-LN g={gamma:g}"
        for noise, alpha in pr.variants:
            for seed in pr.seeds:
                model = ModelConfig(
                    n_layers=pr.n_layers, n_heads=1, d_model=pr.d_model, d_head=pr.d_head, d_mlp=pr.d_mlp,
                    d_vocab=201, n_ctx=13, act_fn="relu", norm=norm, init=pr.init, gamma=gamma, seed=seed,
                    noise=noise, noise_alpha=alpha,
                )  # fmt: skip
                label = variant_label(noise, alpha)
                train = grid_train_config(
                    pr, seed=seed, device=args.device, progress=not args.no_progress,
                    desc=f"{norm} g{gamma:g} {label} s{seed}",
                )  # fmt: skip
                name = f"{norm}_g{gamma:g}_{noise}" + (f"{alpha:g}" if noise != "none" else "") + f"_s{seed}"
                runs.append(
                    MatchingRun(
                        name=name, model=model, train=train, n_train=pr.n_train, n_eval=pr.n_eval,
                        data_seed=seed, solved_patience=pr.solved_patience,
                        labels={"setting": setting, "norm": norm, "gamma": gamma, "variant": noise,
                                "alpha": alpha, "label": label, "seed": seed},
                    )
                )  # fmt: skip
    return runs


def noise_tables(results: pd.DataFrame, out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Final noise strengths and noise shares of every noisy run, read from its checkpoint."""
    strengths, shares = [], []
    for row in results.itertuples():
        if row.variant == "none":
            continue
        model = Transformer.load(out / row.checkpoint)
        strengths.append(noise_strengths(model).assign(run=row.run, label=row.label, setting=row.setting))
        shares.append(noise_share(model).assign(run=row.run, label=row.label, setting=row.setting))
    cat = lambda frames: pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()  # noqa: E731
    return cat(strengths), cat(shares)


def summarize(results: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Per setting and variant: seeds reaching 99%, median steps to 99%, accuracy mean and spread,
    and the effect against 'none' in the same setting (paired by seed)."""
    rows = []
    for (setting, label), d in results.groupby(["setting", "label"], sort=False):
        base = results[(results.setting == setting) & (results.variant == "none")].set_index("seed")
        paired = d.merge(base[["test_acc"]], left_on="seed", right_index=True, suffixes=("", "_none"))
        diff = paired.test_acc - paired.test_acc_none
        reached = d.step_99.notna()
        rows.append(
            {
                "setting": setting, "variant": label, "seeds": len(d),
                "reached_99": f"{int(reached.sum())}/{len(d)}",
                "step_99_median": d.step_99.median() if reached.any() else float("nan"),
                "step_99_range": f"{d.step_99.min():.0f}-{d.step_99.max():.0f}" if reached.any() else "-",
                "budget": int(d.steps.max()),
                "test_mean": d.test_acc.mean(), "test_sd": d.test_acc.std(),
                "ood_mean": d.ood_acc.mean(), "ood_sd": d.ood_acc.std(),
                "test_minus_none": diff.mean() if len(diff) else float("nan"),
                "test_minus_none_sd": diff.std(),
            }
        )  # fmt: skip
    table = pd.DataFrame(rows)
    return table, table.to_string(index=False, float_format=lambda v: f"{v:.3f}")


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
    results, curves = run_grid(
        runs, args.out, force=args.force, progress=not args.no_progress, backend=backend
    )
    strengths, shares = noise_tables(results, args.out)
    table, text = summarize(results)
    written = [args.out / "results.csv", args.out / "curves.csv"]
    for name, df in (("strengths", strengths), ("noise_share", shares), ("summary", table)):
        written.append(write_csv(df, args.out / f"{name}.csv"))
    written += save_figure(
        variant_comparison(results, title="Matching Type 1 (k=2): attention noise variants"),
        args.out,
        "variants",
        static=() if args.html_only else ("png",),
    )
    written += save_figure(
        learning_curves(
            curves, color="label", rows="setting", title="Matching Type 1 (k=2) with attention noise"
        ),
        args.out,
        "learning_curves",
        static=() if args.html_only else ("png",),
    )
    print(text)
    written.append(write_report(
        args.out, title="Matching Type 1 with attention noise", question=__doc__.split("\n\n")[0],
        config=vars(args), headline=table, notes=[precision.describe()], **report_files(written),
    ))  # fmt: skip
    print(
        f"\n{len(runs)} runs in {time.perf_counter() - t0:.0f} s (each run's training time is in results.csv)"
    )
    print(
        "wrote:\n  "
        + "\n  ".join(str(p) for p in written)
        + f"\n  {args.out / 'runs'}/<run>/model.safetensors"
    )
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
