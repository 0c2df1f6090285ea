"""Implicit chain of thought on multi-digit multiplication (Deng et al. 2023), trained from scratch.

Compares five methods (--methods chooses; default all): no_cot, explicit_cot, implicit_kd (the
distillation stages: a mind-reading student, a thought emulator, the two coupled), implicit_si
(stepwise internalization, Deng, Choi and Shieber 2024) and aux_running_sum (the auxiliary
running-sum loss of Bai et al. 2025). Trains the stages the chosen methods need with reasonlens
hooked transformers and the one training loop, then greedy-decodes the test set with each method
and writes, under --out:

  results.csv      one row per method: test accuracy (exact
                   match, and the fraction of answer digits right), parameters, decoding
                   throughput (same run, same test set, same batch size, KV-cache-free greedy
                   decoding), training time
  stages.csv       each stage's steps, training time and final validation metrics
  answer_digits.csv  accuracy on each answer digit (position 0: least significant), greedy
                   decoding for every method, and teacher-forced for the distillation's student
                   given the teacher's states
  results.html/.png, training.html/.png   figures
  runs/<stage>-<key>/  checkpoints, one folder per stage and setup (resumable; reused when
                   nothing that shapes it changed)

CPU preset (default), for d x d digits (default 3x3: the size the CPU preset learns; --digits 4 is
the papers' size): the distillation chain and no-CoT use 4 layers, d_model 128, 4 heads, d_mlp 512,
pre-LN; the running-sum model uses 2 layers (Bai et al.'s depth) for 30,000 steps; stepwise
internalization uses its 4-layer removal schedule. Data: 100k generated training pairs, 1k valid,
1k test, 3k more held out for probes. Steps at batch 64, AdamW, 100 warmup steps then cosine decay
to lr/10: no-CoT 1500 (lr 1e-3), teacher 1200, student 600, emulator 1500 (1e-3), coupled 1500
(3e-4). The stages fall into independent lanes (the distillation chain; no-CoT; stepwise
internalization; the running-sum model), trained side by side on --workers local processes (default:
one per core) or on Ray (--ray); each stage trains exactly as it would alone. Checkpoints are
reused, so a second run only decodes. Measured times: README, "Implicit chain of thought".

--quick: 2-layer d_model 32 models, 12 steps per stage, 256 training pairs, 32 test examples; a
smoke test of every stage (about 10 seconds), written to figures/implicit_cot/quick by default.

--preset paper: GPT-2-small shapes (12 layers, d_model 768, 12 heads, d_mlp 3072, GELU, biases;
85M parameters per transformer, 317M for the implicit model) trained from scratch with the
authors' 808k/1k/1k data sizes, batch 32, constant lr 5e-5, 1 epoch for the baseline and teacher
and 40 for the student, emulator and coupling. Meant for a GPU; here it was only checked to build
and take one step per stage.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
import time
from pathlib import Path

from reasonlens import cli
from reasonlens.names import (
    ICOT_RESULT_METHODS,
    add_kd_shape_option,
    add_stage_steps_option,
    parse_stage_steps,
)

DEFAULT_OUT = Path("figures/implicit_cot")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="implicit_cot.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cli.prepare(p)
    p.add_argument(
        "--digits",
        type=cli.positive_int,
        default=3,
        help="operand digits d, for d x d products (default 3: the size the CPU preset learns; 4 is the "
        "papers' size)",
    )
    p.add_argument("--quick", action="store_true", help="tiny models, a few steps: a smoke test")
    p.add_argument("--preset", choices=["cpu", "paper"], default="cpu", help="model and budget preset")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--out", type=cli.out_dir, default=None,
        help=f"output folder (default {DEFAULT_OUT}, or {DEFAULT_OUT / 'quick'} with --quick)",
    )  # fmt: skip
    p.add_argument(
        "--seed", type=cli.seed, default=0, help="seeds the data, the initial weights and the batches"
    )
    p.add_argument(
        "--data", type=Path, default=None,
        help="read train.txt, valid.txt and test.txt (or test_bigbench.txt) in the authors' line "
        "format from this folder instead of generating data",
    )  # fmt: skip
    p.add_argument(
        "--methods", nargs="+", default=list(ICOT_RESULT_METHODS), metavar="METHOD",
        help=f"which methods to train and test (default: all of {' '.join(ICOT_RESULT_METHODS)}); "
        "only the stages they need are trained",
    )  # fmt: skip
    p.add_argument(
        "--decode-batch-size", type=cli.positive_int, default=250, help="examples per decoding batch"
    )
    p.add_argument(
        "--aux-weight", type=cli.nonneg_float, default=None,
        help="weight of the running-sum loss of aux_running_sum (default: the preset's, 30)",
    )  # fmt: skip
    add_kd_shape_option(p)
    add_stage_steps_option(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--html-only", action="store_true", help="skip the PNG copies of the figures (faster)")
    cli.add_backend_options(p)
    args = p.parse_args(argv)
    if args.out is None:
        args.out = DEFAULT_OUT / "quick" if args.quick else DEFAULT_OUT
    return args


if __name__ == "__main__":
    parse_args()  # --help and bad arguments are answered here, before the heavy imports below

import pandas as pd  # noqa: E402

from reasonlens.icot import (  # noqa: E402
    RESULT_METHODS,
    ICoTSetup,
    generate_answers,
    make_data,
    preset,
    run_stages_parallel,
    stage_lanes,
)
from reasonlens.io import write_csv  # noqa: E402
from reasonlens.plots import save_figure  # noqa: E402
from reasonlens.plots.icot import results_figure, training_figure  # noqa: E402
from reasonlens.plots.report import report_files, write_report  # noqa: E402
from reasonlens.tasks import multiplication as mult  # noqa: E402
from reasonlens.training.grid import backend_from_args  # noqa: E402
from reasonlens.training.trainer import check_device  # noqa: E402


def _validate(args: argparse.Namespace) -> None:
    if not 1 <= args.digits <= mult.MAX_DIGITS:
        raise SystemExit(f"--digits must be in 1..{mult.MAX_DIGITS}; got {args.digits}")
    if args.decode_batch_size < 1:
        raise SystemExit(f"--decode-batch-size must be positive; got {args.decode_batch_size}")
    unknown = [m for m in args.methods if m not in RESULT_METHODS]
    if unknown:
        raise SystemExit(f"--methods: unknown method(s) {unknown}; choose from {list(RESULT_METHODS)}")
    if args.workers is not None and args.workers < 1:
        raise SystemExit(f"--workers must be >= 1; got {args.workers}")
    if args.data is not None and not args.data.is_dir():
        raise SystemExit(f"--data: no folder at {args.data}")
    try:
        check_device(args.device, "--device")
        parse_stage_steps(args.stage_steps)
    except ValueError as err:
        raise SystemExit(str(err)) from None


def load_data_dir(folder: Path, setup: ICoTSetup) -> dict[str, mult.MultiplicationData]:
    """Splits read from the authors' files; the probe split is the head of the training file."""
    names = {"train": ["train.txt"], "valid": ["valid.txt"], "test": ["test.txt", "test_bigbench.txt"]}
    splits = {}
    for split, candidates in names.items():
        path = next((folder / c for c in candidates if (folder / c).is_file()), None)
        if path is None:
            raise SystemExit(f"--data: {folder} has none of {candidates}")
        splits[split] = mult.read_file(path)
        shapes = splits[split].shapes
        if any(tuple(s) != tuple(setup.digits) for s in shapes):
            d = setup.digits[0]
            raise SystemExit(f"--data: {path} holds {shapes} products but --digits is {d} ({d}x{d})")
    overlap = set(splits["train"].lines()) & set(splits["test"].lines())
    if overlap:
        raise SystemExit(
            f"--data: {len(overlap)} test example(s) also appear in the training file, "
            f"e.g. {sorted(overlap)[0]!r}; remove them so the test accuracy means something"
        )
    if setup.n_probe:
        train = splits["train"]
        if len(train) <= setup.n_probe:
            raise SystemExit(
                f"--data: the training file has {len(train)} examples, too few for the probe split"
            )
        splits["probe"], splits["train"] = train[: setup.n_probe], train[setup.n_probe :]
    return splits


def data_hash(folder: Path) -> str:
    """A short hash of the data files' contents, so runs on different files never share checkpoints."""
    digest = hashlib.sha1()
    for path in sorted(folder.glob("*.txt")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def build_setup(args: argparse.Namespace) -> ICoTSetup:
    setup = preset(args.preset, (args.digits, args.digits), quick=args.quick, seed=args.seed)
    setup = setup.with_steps(parse_stage_steps(args.stage_steps))
    if args.aux_weight is not None:
        setup = dataclasses.replace(setup, aux_weight=args.aux_weight)
    if args.kd_shape is not None:
        setup = setup.with_kd_shape(*args.kd_shape)
    return setup.with_device(args.device).with_progress(not args.no_progress)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _validate(args)
    setup = build_setup(args)
    t_start = time.perf_counter()
    splits = load_data_dir(args.data, setup) if args.data is not None else make_data(setup)
    if args.data is not None:
        setup = dataclasses.replace(setup, data=f"files:{data_hash(args.data)}")
    run_dir = args.out / "runs"
    print(f"implicit CoT, {setup.digits[0]}x{setup.digits[1]} digits, preset {setup.preset}: "
          f"{len(splits['train'])} train / {len(splits['valid'])} valid / {len(splits['test'])} test; "
          f"checkpoints in {run_dir}", flush=True)  # fmt: skip
    methods = [m for m in RESULT_METHODS if m in args.methods]
    stages = [RESULT_METHODS[m].stage for m in methods]
    backend = backend_from_args(args, n_runs=len(stage_lanes(setup, stages)))
    run = run_stages_parallel(setup, splits, run_dir, backend, stages=stages, progress=not args.no_progress)

    rows, digit_rows = [], []
    for method in methods:
        spec = RESULT_METHODS[method]
        model = run.models[spec.stage]
        res = generate_answers(spec.decode, model, splits["test"], batch_size=args.decode_batch_size)
        trained = setup.needed_stages([spec.stage])  # its own stage and the ones it reads from
        print(f"[test] {method}: accuracy {res.accuracy:.4f} (digits {res.digit_accuracy:.3f}), "
              f"{res.examples_per_second:.1f} examples/s "
              f"({res.seconds:.1f} s)", flush=True)  # fmt: skip
        digit_rows += [
            {"method": method, "model": spec.stage, "decoding": "greedy", "position": k, "accuracy": acc}
            for k, acc in enumerate(res.digit_accuracy_by_position)
        ]
        if method == "implicit_kd":  # the student, handed the teacher's states: what they let it read
            digit_rows += [
                {
                    "method": method,
                    "model": "student",
                    "decoding": "teacher_forced",
                    "position": k,
                    "accuracy": acc,
                }
                for k, acc in enumerate(run.student_digit_accuracy(splits["test"]))
            ]
        rows.append({
            "method": method,
            "model": spec.stage,
            "test_accuracy": res.accuracy,
            "test_digit_accuracy": res.digit_accuracy,
            "n_test": res.n_examples,
            "n_params": sum(p.numel() for p in model.parameters()),
            "decode_seconds": round(res.seconds, 3),
            "examples_per_second": res.examples_per_second,
            "tokens_per_second": res.tokens_per_second,
            "train_seconds": round(sum(run.results[s].wall_time for s in trained), 1),
            "train_steps": sum(run.results[s].steps_done for s in trained),
            "digits": f"{setup.digits[0]}x{setup.digits[1]}",
            "preset": setup.preset,
            "device": str(next(model.parameters()).device),
        })  # fmt: skip
    results = pd.DataFrame(rows)
    base = results.examples_per_second[results.method == "no_cot"]
    results["speed_vs_nocot"] = results.examples_per_second / base.iloc[0] if len(base) else float("nan")
    written = [write_csv(results, args.out / "results.csv")]
    written.append(write_csv(run.stage_summary(), args.out / "stages.csv"))
    written.append(write_csv(pd.DataFrame(digit_rows), args.out / "answer_digits.csv"))
    metrics = pd.concat([r.metrics.assign(stage=s) for s, r in run.results.items()], ignore_index=True)
    title = f"Implicit CoT, {setup.digits[0]}x{setup.digits[1]} multiplication, preset {setup.preset}"
    static = () if args.html_only else ("png",)
    written += save_figure(results_figure(results, title), args.out, "results", static=static)
    written += save_figure(training_figure(metrics, title), args.out, "training", static=static)
    print(
        results[["method", "test_accuracy", "n_params", "examples_per_second", "train_seconds"]].to_string(
            index=False
        )
    )
    written.append(write_report(
        args.out, title=title, question=__doc__.split("\n\n")[0], config={**vars(args), "setup": setup},
        headline=results[["method", "test_accuracy", "test_digit_accuracy", "n_params", "examples_per_second",
                          "train_seconds"]],
        **report_files(written),
    ))  # fmt: skip
    print(f"{time.perf_counter() - t_start:.0f} s in all; wrote:")
    print("  " + "\n  ".join(str(p) for p in written) + f"\n  {run_dir}/<stage>-<key>/ (checkpoints)")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
