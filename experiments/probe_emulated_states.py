"""Linear probes on the implicit-CoT models' states, layer by layer.

Sources, per layer l (see reasonlens.icot.activations): the teacher's diagonal states, the
thought emulator's predictions of them (before and after coupling), the coupled student's state at
the separator as block l reads it, and the no-CoT model's state at the same position. Targets: the
chain-of-thought token at the layer's diagonal position t_l and the one after it, and every written
digit of each partial product, each running sum and the answer.

Probes are multinomial logistic regressions on standardised features (reasonlens.probes, solver
"sklearn"), one train/test split by example (70/30) shared by all fits, each with a shuffled-label
control. The models come from experiments/implicit_cot.py's
checkpoints for the same preset, digits and seed (under --runs); whatever is missing is trained
first, exactly as that script would. Without --out and --runs they are implicit_cot.py's own
(figures/implicit_cot/runs); with --out alone, OUT/runs, so nothing is written outside --out (pass
--runs figures/implicit_cot/runs to reuse implicit_cot.py's models there). Writes under --out:

  probes.csv       source, layer, target, group, metric, score, control_score, selectivity,
                   n_train, n_test, chance (one row per fit)
  probes.html/.png mean probe accuracy vs layer, one line per source, one panel per target group

Default: the CPU preset's 3000 held-out probe examples (disjoint from train, valid and test),
5 sources x 4 layers x 43 targets, each fit twice (probe and control): about 3 minutes with one
thread on a 2-core CPU once implicit_cot.py has trained the models (otherwise add its ~16 minutes).
--quick: the tiny smoke-test models and one target per group (seconds).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from reasonlens import cli
from reasonlens.names import (
    ICOT_QUICK_RUNS,
    ICOT_RUNS,
    ICOT_STAGES,
    add_kd_shape_option,
    add_stage_steps_option,
    icot_analysis_folders,
    parse_stage_steps,
)

DEFAULT_OUT = Path("figures/probe_emulated_states")
DEFAULT_RUNS, QUICK_RUNS = ICOT_RUNS, ICOT_QUICK_RUNS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="probe_emulated_states.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli.prepare(p)
    p.add_argument(
        "--digits", type=cli.positive_int, default=4, help="operand digits d, for d x d products (default 4)"
    )
    p.add_argument("--quick", action="store_true", help="tiny models, one target per group: a smoke test")
    p.add_argument("--preset", choices=["cpu", "paper"], default="cpu", help="model and budget preset")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, ...")
    p.add_argument("--seed", type=cli.seed, default=0, help="the implicit_cot.py seed whose models to probe")
    p.add_argument(
        "--out", type=cli.out_dir, default=None,
        help=f"output folder (default {DEFAULT_OUT}, or {DEFAULT_OUT / 'quick'} with --quick)",
    )  # fmt: skip
    p.add_argument(
        "--runs",
        type=Path,
        default=None,
        help=f"checkpoint folder, where missing models are trained (default: OUT/runs when --out is "
        f"given, so that nothing is written outside it; otherwise implicit_cot.py's {DEFAULT_RUNS}, or "
        f"{QUICK_RUNS} with --quick, reusing its models)",
    )
    p.add_argument(
        "--max-iter", type=cli.positive_int, default=200, help="L-BFGS iterations per probe (default 200)"
    )
    add_kd_shape_option(p)
    add_stage_steps_option(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--html-only", action="store_true", help="skip the PNG copies of the figures (faster)")
    args = p.parse_args(argv)
    args.out, args.runs = icot_analysis_folders(args.out, args.runs, args.quick, DEFAULT_OUT)
    return args


if __name__ == "__main__":
    parse_args()  # --help and bad arguments are answered here, before the heavy imports below

import pandas as pd  # noqa: E402

from reasonlens.icot import make_data, preset, run_stages  # noqa: E402
from reasonlens.icot.activations import SOURCES, collect_states, probe_targets, target_group  # noqa: E402
from reasonlens.icot.probing import probe_table  # noqa: E402
from reasonlens.io import write_csv  # noqa: E402
from reasonlens.plots import save_figure  # noqa: E402
from reasonlens.plots.common import with_run_identity  # noqa: E402
from reasonlens.plots.icot import emulated_probe_figure  # noqa: E402
from reasonlens.plots.report import report_files, write_report  # noqa: E402
from reasonlens.tasks import multiplication as mult  # noqa: E402
from reasonlens.training.trainer import check_device  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not 1 <= args.digits <= mult.MAX_DIGITS:
        raise SystemExit(f"--digits must be in 1..{mult.MAX_DIGITS}; got {args.digits}")
    if args.max_iter < 1:
        raise SystemExit(f"--max-iter must be positive; got {args.max_iter}")
    try:
        check_device(args.device, "--device")
        stage_steps = parse_stage_steps(args.stage_steps)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    t0 = time.perf_counter()
    setup = preset(args.preset, (args.digits, args.digits), quick=args.quick, seed=args.seed)
    if args.kd_shape is not None:
        setup = setup.with_kd_shape(*args.kd_shape)
    setup = setup.with_steps(stage_steps).with_device(args.device).with_progress(not args.no_progress)
    splits = make_data(setup)
    # only what the sources read: the distillation chain and the no-CoT model, not SI or the aux model
    run = run_stages(setup, splits, args.runs, stages=ICOT_STAGES)
    data = splits["probe"]
    states = collect_states(run, data)
    n_layers = run.models["teacher"].cfg.n_layers
    targets = probe_targets(data, n_layers)
    if args.quick:  # one target per group: its last, the most significant digit for numbers
        lasts = {target_group(name): name for name in targets}
        targets = {name: targets[name] for name in lasts.values()}
    features = {(s, layer): states[s][:, layer] for s in SOURCES for layer in range(states[s].shape[1])}
    print(f"probing {len(features)} (source, layer) state sets for {len(targets)} targets on "
          f"{len(data)} examples", flush=True)  # fmt: skip
    t_probe = time.perf_counter()
    table = probe_table(features, targets, seed=args.seed, max_iter=args.max_iter)
    table.insert(3, "group", table.target.map(target_group))
    written = [write_csv(table, args.out / "probes.csv")]
    title = f"Linear probes, {setup.digits[0]}x{setup.digits[1]} multiplication, preset {setup.preset}"
    static = () if args.html_only else ("png",)
    identity = [run.identity(stage) for stage in run.models]
    fig = with_run_identity(emulated_probe_figure(table, title), identity)
    written += save_figure(fig, args.out, "probes", static=static)
    summary = table.pivot_table(index=["group", "source"], columns="layer", values="score", aggfunc="mean")
    with pd.option_context("display.width", 160, "display.precision", 3):
        print("mean probe accuracy by layer:")
        print(summary.to_string())
    headline = summary.rename(columns=lambda c: f"layer {c}").reset_index()
    written.append(write_report(
        args.out, title=title, question=__doc__.split("\n\n")[0], config={**vars(args), "setup": setup},
        headline=headline, notes=["mean probe accuracy (test) by layer"], **report_files(written),
    ))  # fmt: skip
    print(f"probes took {time.perf_counter() - t_probe:.0f} s ({time.perf_counter() - t0:.0f} s in all); "
          "wrote:\n  " + "\n  ".join(str(p) for p in written))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
