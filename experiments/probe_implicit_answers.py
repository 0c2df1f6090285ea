"""What the answer-only models hold where they write each answer digit (Bai et al. 2025's test).

For the no-CoT baseline, the stepwise-internalized model and the running-sum-loss model of
experiments/implicit_cot.py (same preset, digits and seed; trained first if their checkpoints under
--runs are missing, exactly as that script would; without --out and --runs they are implicit_cot.py's
own, with --out alone OUT/runs), at the position predicting answer digit k:

- probes of the residual stream entering block 0 and leaving every block: the running sum c_k and
  the column sum (ridge regression, R^2), the carry in and the answer digit (classifiers), digit k
  of each partial product; each with a shuffled-label control (reasonlens.probes, closed form);
- attention from that position to every operand digit, per layer and head.

Bai et al. find c_k linearly decodable in their working implicit model and not in the standard
one; probes.csv answers the same question for these models. Writes under --out:

  answer_probes.csv     method, hook, layer, answer_digit, position, target, metric, score,
                        control_score, selectivity, n_train, n_test, chance
  answer_attention.csv  method, layer, head, answer_digit, operand, operand_digit, weight
  answer_probes.html/.png, answer_attention.html/.png

--quick: the tiny smoke-test models (seconds).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reasonlens import cli
from reasonlens.names import ICOT_RUNS, icot_analysis_folders

DEFAULT_OUT = Path("figures/probe_implicit_answers")
METHODS = ("no_cot", "implicit_si", "aux_running_sum")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="probe_implicit_answers.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    cli.prepare(p)
    p.add_argument("--digits", type=cli.positive_int, default=4, help="operand digits d (default 4)")
    p.add_argument("--quick", action="store_true", help="tiny models: a smoke test")
    p.add_argument("--preset", choices=["cpu", "paper"], default="cpu", help="model and budget preset")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="models to probe")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, ...")
    p.add_argument("--seed", type=cli.seed, default=0, help="the implicit_cot.py seed whose models to probe")
    p.add_argument("--out", type=cli.out_dir, default=None, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument(
        "--runs", type=Path, default=None,
        help=f"checkpoint folder (default: OUT/runs with --out, else {ICOT_RUNS})",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--html-only", action="store_true", help="skip the PNG copies of the figures (faster)")
    args = p.parse_args(argv)
    args.out, args.runs = icot_analysis_folders(args.out, args.runs, args.quick, DEFAULT_OUT)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import pandas as pd

    from reasonlens.icot import RESULT_METHODS, make_data, preset, run_stages
    from reasonlens.icot.answer_probes import answer_attention, probe_answer_positions
    from reasonlens.io import write_csv
    from reasonlens.plots import save_figure
    from reasonlens.plots.common import with_run_identity
    from reasonlens.plots.icot import answer_attention_figure, answer_probe_figure
    from reasonlens.plots.report import report_files, write_report
    from reasonlens.tasks import multiplication as mult
    from reasonlens.training.trainer import check_device

    if not 1 <= args.digits <= mult.MAX_DIGITS:
        raise ValueError(f"--digits must be in 1..{mult.MAX_DIGITS}; got {args.digits}")
    check_device(args.device, "--device")
    setup = preset(args.preset, (args.digits, args.digits), quick=args.quick, seed=args.seed)
    setup = setup.with_device(args.device).with_progress(not args.no_progress)
    splits = make_data(setup)
    stages = [RESULT_METHODS[m].stage for m in args.methods]
    run = run_stages(setup, splits, args.runs, stages=stages)
    data = splits["probe"] if "probe" in splits else splits["test"]
    probes, attention = [], []
    for method in args.methods:
        m = RESULT_METHODS[method]
        model = run.models[m.stage]
        model = getattr(model, "model", model)  # the running-sum model: its plain transformer
        fmt = "internalized" if m.decode == "internalized" else "nocot"
        print(f"probing {method} ({fmt} format) on {len(data)} examples", flush=True)
        probes.append(probe_answer_positions(model, data, fmt, seed=args.seed).assign(method=method))
        attention.append(answer_attention(model, data, fmt).assign(method=method))
    table = pd.concat(probes, ignore_index=True)
    table = table[["method", *[c for c in table.columns if c != "method"]]]
    att = pd.concat(attention, ignore_index=True)
    att = att[["method", *[c for c in att.columns if c != "method"]]]
    write_csv(table, args.out / "answer_probes.csv")
    write_csv(att, args.out / "answer_attention.csv")
    static = () if args.html_only else ("png",)
    size = f"{setup.digits[0]}x{setup.digits[1]}"
    identity = [f"{method} = " + run.identity(RESULT_METHODS[method].stage) for method in args.methods]
    probe_fig = answer_probe_figure(table, f"Answer-position probes, {size}, preset {setup.preset}")
    save_figure(with_run_identity(probe_fig, identity), args.out, "answer_probes", static=static)
    att_fig = answer_attention_figure(att, f"Attention to operand digits, {size}, preset {setup.preset}")
    save_figure(with_run_identity(att_fig, identity), args.out, "answer_attention", static=static)
    sums = table[table.target == "running_sum"]
    summary = sums.pivot_table(index=["method", "answer_digit"], columns="layer", values="score")
    with pd.option_context("display.width", 160, "display.precision", 2):
        print("running sum c_k, probe R^2 by depth (0 = embeddings):")
        print(summary.to_string())
    written = ["answer_probes.csv", "answer_attention.csv", "answer_probes.html", "answer_attention.html"]
    write_report(
        args.out,
        title=f"Answer-position probes and attention, {size}, preset {setup.preset}",
        question=__doc__.split("\n\n")[0],
        config={**vars(args), "setup": setup},
        headline=summary.rename(columns=lambda c: f"depth {c}").reset_index(),
        notes=["running sum c_k, probe R^2 by depth (0 = embeddings)"],
        **report_files(args.out / f for f in written),
    )
    written.append("report.html")
    print("wrote " + ", ".join(str(args.out / f) for f in written))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
