"""Decomposer + solver against chain-of-thought, trained from scratch (Shridhar et al. 2023).

Generated multi-step word problems (2 to 5 steps, GSM8K-socratic layout; reasonlens.tasks.wordproblems)
train three transformers of the same shape for the same steps at the same batch size, with the one
trainer: a CoT solver (question -> every step -> #### answer), a decomposer (question -> the
sub-questions) and a sub-question solver (question + sub-questions and answers so far + next
sub-question -> its answer). At test time (greedy decoding) the decomposer asks and the solver
answers in turn; the last sub-answer's number is the final answer. The solver is also given the
true sub-questions (an oracle decomposer), which separates decomposition errors from solving
errors. Test problems use (person, item) pairs never seen in training.

    python experiments/decomposition.py                 # CPU preset (see --help)
    python experiments/decomposition.py --quick         # seconds: a smoke run
    python experiments/decomposition.py --seeds 0 1 2 --out figures/decomposition3
    python experiments/decomposition.py --gsm8k-train train_socratic.jsonl --gsm8k-test test_socratic.jsonl

Outputs under --out (default figures/decomposition, or figures/decomposition/quick with --quick):
  results.csv       exact match per method, number of steps and seed (method, n_steps, accuracy,
                    seed, n); method "decomposer" is the fraction of problems whose generated
                    sub-questions equal the true ones exactly
  predictions.csv   one row per test problem and method
  training.csv      per model and seed: steps, training seconds, parameters, final validation
                    loss and token accuracy (teacher forced)
  accuracy_by_steps.html/.png   the figure
  runs/<model>-s<seed>-<key>/   checkpoints (a finished run with the same settings is reused)

CPU preset (default): each model 3 layers, d_model 64, 4 heads, d_mlp 256, pre-LN, GELU (0.17M
parameters with the word vocabulary of the generated problems); 1200 AdamW steps at batch 32, lr
2e-3 (50 warm-up steps, cosine to 2e-4); 20,000 training problems, 50 test problems per step
count. Sized from a short run's CPU time: about 17 minutes estimated on one core (README).
--quick: 1-layer d_model 16 models, 6 steps, 64
problems: a smoke test.

Paper claims (GSM8K, GPT-2 variants fine-tuned): decomposition beats CoT distillation by up to 35%;
a citing paper reports GPT-2 large CoT 14.1 vs Socratic CoT 21.1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from reasonlens import cli

DEFAULT_OUT = Path("figures/decomposition")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="decomposition.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cli.prepare(p)
    p.add_argument("--quick", action="store_true", help="tiny models, a few steps: a smoke test")
    p.add_argument(
        "--out", type=cli.out_dir, default=None,
        help=f"output folder (default {DEFAULT_OUT}, or {DEFAULT_OUT / 'quick'} with --quick)",
    )  # fmt: skip
    p.add_argument(
        "--seeds", type=cli.seed, nargs="+", default=[0],
        help="seeds (data, initial weights, batch order); default 0",
    )  # fmt: skip
    p.add_argument("--seed", type=cli.seed, default=None, help="one seed (same as --seeds N)")
    p.add_argument("--steps", type=cli.positive_int, default=None, help="training steps per model (preset's)")
    p.add_argument(
        "--n-steps", type=cli.positive_int, nargs="+", default=None, metavar="K",
        help="reasoning-step counts of the problems, each in 2..5 (default all)",
    )  # fmt: skip
    p.add_argument(
        "--test-per-steps", type=cli.positive_int, default=None, help="test problems per step count"
    )
    p.add_argument(
        "--gsm8k-train", type=cli.existing_file, default=None, metavar="JSONL",
        help="train on this GSM8K-socratic JSONL file instead of generated problems (with --gsm8k-test)",
    )  # fmt: skip
    p.add_argument(
        "--gsm8k-test", type=cli.existing_file, default=None, metavar="JSONL",
        help="test on this GSM8K-socratic JSONL file (with --gsm8k-train); accuracy by its step counts",
    )  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1 or auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--html-only", action="store_true", help="skip the PNG copy of the figure (faster)")
    args = p.parse_args(argv)
    if args.n_steps is not None:
        bad = [k for k in args.n_steps if not 2 <= k <= 5]
        if bad:
            p.error(f"--n-steps: each step count must be in 2..5; got {bad[0]}")
    if (args.gsm8k_train is None) != (args.gsm8k_test is None):
        p.error("give both --gsm8k-train and --gsm8k-test, or neither")
    if args.seed is not None:
        args.seeds = [args.seed]
    args.seeds = list(dict.fromkeys(args.seeds))
    if args.out is None:
        args.out = DEFAULT_OUT / "quick" if args.quick else DEFAULT_OUT
    return args


if __name__ == "__main__":
    parse_args()  # --help and bad arguments are answered here, before the heavy imports below

import dataclasses  # noqa: E402

import pandas as pd  # noqa: E402

from reasonlens.decompose import ANSWER_METHODS, PRESETS, run_seed  # noqa: E402
from reasonlens.io import write_csv  # noqa: E402
from reasonlens.plots import save_figure  # noqa: E402
from reasonlens.plots.decompose import accuracy_by_steps_figure  # noqa: E402
from reasonlens.plots.report import report_files, write_report  # noqa: E402
from reasonlens.tasks.wordproblems import read_gsm8k_jsonl, require_sub_questions  # noqa: E402
from reasonlens.training.trainer import check_device  # noqa: E402

PAPER = (
    "paper (GSM8K, GPT-2 variants): decomposition beats CoT distillation by up to 35%; "
    "a citing paper: GPT-2 large CoT 14.1 vs Socratic CoT 21.1"
)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_device(args.device, "--device")
    overrides = {
        k: v
        for k, v in dict(
            steps=args.steps,
            n_steps=tuple(args.n_steps) if args.n_steps else None,
            n_test_per_steps=args.test_per_steps,
        ).items()
        if v is not None
    }
    cfg = dataclasses.replace(PRESETS["quick" if args.quick else "cpu"], **overrides)
    given = None
    if args.gsm8k_train is not None:  # read and check both files before any training
        given = (read_gsm8k_jsonl(args.gsm8k_train), read_gsm8k_jsonl(args.gsm8k_test))
        for problems in given:
            require_sub_questions(problems)
    t0 = time.perf_counter()
    results, predictions, training = [], [], []
    for seed in args.seeds:
        r, p, t = run_seed(cfg, seed, args.out / "runs", args.device, not args.no_progress, given)
        results.append(r)
        predictions.append(p)
        training.append(t)
    results_df = pd.concat(results, ignore_index=True)
    written = [
        write_csv(results_df, args.out / "results.csv"),
        write_csv(pd.concat(predictions, ignore_index=True), args.out / "predictions.csv"),
        write_csv(pd.concat(training, ignore_index=True), args.out / "training.csv"),
    ]
    seeds = ", ".join(map(str, args.seeds))
    data = "GSM8K-socratic" if given else "Word problems"
    fig = accuracy_by_steps_figure(
        results_df, f"{data}: CoT vs decomposer + solver ({cfg.steps} steps per model, seeds {seeds})"
    )
    written += save_figure(fig, args.out, "accuracy_by_steps", static=() if args.html_only else ("png",))
    table = results_df.pivot_table(index="method", columns="n_steps", values="accuracy", aggfunc="mean")
    overall = results_df.groupby("method").apply(
        lambda d: (d.accuracy * d.n).sum() / d.n.sum(), include_groups=False
    )
    table["all"] = overall
    table = table.reindex([*ANSWER_METHODS, "decomposer"])
    print(f"exact match by number of steps (mean over seeds {seeds}):")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print(PAPER)
    written.append(
        write_report(
            args.out,
            title="Decomposer + solver vs CoT on multi-step word problems",
            question=__doc__.split("\n\n")[0],
            config={**vars(args), "preset": dataclasses.asdict(cfg)},
            headline=table.reset_index(),
            notes=[PAPER],
            **report_files(written),
        )
    )
    print(f"\n{len(args.seeds)} seed(s) in {time.perf_counter() - t0:.0f} s")
    print("wrote:\n  " + "\n  ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
