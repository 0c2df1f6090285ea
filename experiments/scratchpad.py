"""Scratchpads (Nye et al. 2021): do models that write their intermediate steps generalize to longer
inputs than models that answer directly? And does the direct model compute those steps internally?

For --task addition (default) or polynomial, and for every seed, trains a direct model (prompt ->
answer) and a scratchpad model (prompt -> one line per column or term -> answer) of the same shape,
steps and batch size on lengths 1..8 only (digits per operand, or terms of the polynomial), then
greedy-decodes test examples of lengths 1..10 from the prompt and grades the final answer (exact
match). 9 and 10 are out of distribution: no training example has them. Finally probes the direct
model's residual stream (entering block 0 and leaving every block, at every input position of
teacher-forced length-8 sequences) for each column's carry (addition) or each running sum
(polynomial), with shuffled-label controls: does it compute them, and at which layer?

Writes under --out (default figures/scratchpad/TASK):

  results.csv        task, method, digits, accuracy, seed, in_distribution, n_examples,
                     scratch_accuracy, answer_digit_accuracy, n_params, train_steps, batch_size,
                     train_seconds
  accuracy.html/.png accuracy against length, both methods, training range shaded
  carry_probes.csv   (addition; sum_probes.csv for polynomials) seed, hook, layer, depth, position,
                     token, predicts_answer_digit, target, column, metric, score, control_score,
                     selectivity, n_train, n_test, chance
  carry_probes.html/.png (sum_probes.*) probe accuracy per depth x position x value
  runs/METHOD-seedS/ each model's checkpoint and training metrics (a finished run is reused)

Preset "cpu" (the default; 3 layers, 4 heads, d_model 64, 157k parameters; 3000 steps of 64
examples per model, lr 3e-3; 100 test examples per length; probes on 2000 sequences) is sized for
a 2-core CPU: measured for addition on one core, about 2.5 minutes of training for the direct model
and 8.5 for the scratchpad model, about 11 minutes in all with decoding and probing. --quick is a
seconds-long smoke run. See the README for what was measured.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reasonlens import cli

TASKS = ("addition", "polynomial")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scratchpad.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cli.prepare(p)
    p.add_argument("--task", choices=TASKS, default="addition", help="addition (default) or polynomial")
    p.add_argument("--quick", action="store_true", help="tiny models and budget: a smoke run in seconds")
    p.add_argument("--seeds", type=cli.seed, nargs="+", default=[0], help="seeds (default 0)")
    p.add_argument(
        "--steps", type=cli.positive_int, default=None, help="training steps per model (default: preset)"
    )
    p.add_argument(
        "--n-test", type=cli.positive_int, default=None, help="test examples per length (default: preset)"
    )
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, ...")
    p.add_argument(
        "--out", type=cli.out_dir, default=None, help="output folder (default figures/scratchpad/TASK)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--html-only", action="store_true", help="skip the PNG copies of the figures (faster)")
    args = p.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds: repeated seed in {args.seeds}")
    if args.out is None:
        args.out = Path("figures/scratchpad") / (f"{args.task}-quick" if args.quick else args.task)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import pandas as pd

    from reasonlens import scratchpad as S
    from reasonlens.io import write_csv, write_json
    from reasonlens.plots import save_figure
    from reasonlens.plots.common import checkpoint_identity, with_run_identity
    from reasonlens.plots.report import report_files, write_report
    from reasonlens.plots.scratchpad import intermediate_probe_figure, length_accuracy_figure
    from reasonlens.tasks import scratch as sp
    from reasonlens.training.trainer import MODEL_FILE, check_device

    check_device(args.device, "--device")
    setup = S.preset("quick" if args.quick else "cpu", args.task, seed=args.seeds[0])
    changes = dict(device=args.device, progress=not args.no_progress)
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.n_test is not None:
        changes["n_test"] = args.n_test
    setup = setup.replace(**changes)
    out: Path = args.out
    write_json(setup.to_dict() | {"seeds": args.seeds}, out / "setup.json")
    static = () if args.html_only else ("png",)
    size_label = "digits per operand" if args.task == "addition" else "terms of the polynomial"
    kind = "carry" if args.task == "addition" else "sum"
    kinds = "carries" if kind == "carry" else "running sums"
    train_max = max(setup.train_sizes)

    rows, probes = [], []
    for seed in args.seeds:
        models = {}
        for method in S.METHODS:
            print(f"training {args.task} {method}, seed {seed} ({setup.steps} steps)", flush=True)
            model, res = S.train_model(setup, method, seed, out / "runs" / f"{method}-seed{seed}")
            models[method] = model
            tests = S.make_test_sets(setup, method, seed)
            table = S.evaluate(model, sp.concat([d.seq for d in tests.values()]), setup.decode_batch_size)
            table = table.assign(
                task=args.task, method=method, seed=seed, in_distribution=table.digits <= train_max,
                n_params=model.n_params(), train_steps=res.steps_done, batch_size=setup.batch_size,
                train_seconds=round(res.wall_time, 1),
            )  # fmt: skip
            rows.append(table[S.RESULT_COLUMNS])
            results = pd.concat(rows, ignore_index=True)
            write_csv(results, out / "results.csv")
        print(f"probing the direct model for {kinds} (seed {seed})", flush=True)
        data = setup.make(setup.n_probe, [setup.probed_size], "direct", (seed, 5))
        probes.append(S.probe_intermediates(models["direct"], data, seed=seed).assign(seed=seed))
        table = pd.concat(probes, ignore_index=True)
        table = table[["seed", *[c for c in table.columns if c != "seed"]]]
        write_csv(table, out / f"{kind}_probes.csv")

    title = (f"{args.task}: direct vs scratchpad, {setup.n_layers} layers, d_model {setup.d_model}, "
             f"{setup.steps} steps x {setup.batch_size}, seeds {args.seeds}")  # fmt: skip
    save_figure(length_accuracy_figure(results, train_max, title, size_label), out, "accuracy", static=static)
    first = table[table.seed == args.seeds[0]]
    ptitle = (f"Direct {args.task} model, seed {args.seeds[0]}: linear probes for each {kind} "
              f"(length {setup.probed_size}; test accuracy, colour floor at chance)")  # fmt: skip
    probed = out / "runs" / f"direct-seed{args.seeds[0]}" / MODEL_FILE
    identity = checkpoint_identity(probed, setup.steps)
    probe_fig = with_run_identity(intermediate_probe_figure(first, ptitle), [identity])
    save_figure(probe_fig, out, f"{kind}_probes", static=static)

    with pd.option_context("display.width", 160, "display.precision", 3):
        print("exact-match accuracy by length (mean over seeds):")
        print(results.pivot_table(index="method", columns="digits", values="accuracy").to_string())
        where = table[table.predicts_answer_digit == table.column] if kind == "carry" else table
        if kind == "carry" and len(where):
            print("carry into column i, probed where answer digit i is predicted (accuracy by depth):")
            print(where.pivot_table(index="target", columns="depth", values="score").to_string())
        else:
            print(f"best probe accuracy per {kind} over positions, by depth:")
            best = table.groupby(["target", "depth"]).score.max().unstack()
            print(best.to_string())
    written = ["results.csv", "accuracy.html", f"{kind}_probes.csv", f"{kind}_probes.html"]
    headline = results.pivot_table(index="method", columns="digits", values="accuracy")
    write_report(
        out,
        title=f"Scratchpads: {args.task}, direct vs scratchpad",
        question=__doc__.split("\n\n")[0],
        config={**vars(args), "setup": setup.to_dict()},
        headline=headline.rename(columns=lambda c: f"length {c}").reset_index(),
        notes=[f"exact-match accuracy by length (mean over seeds); lengths 1..{train_max} trained"],
        **report_files([*(out / f for f in written), out / "setup.json"]),
    )
    written.append("report.html")
    print("wrote: " + ", ".join(str(out / f) for f in written))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
