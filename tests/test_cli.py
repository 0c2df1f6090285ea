"""The one error boundary: bad inputs to every script print one line ``error: ...`` naming the
value and exit 2, no traceback (unless --debug); the validators reject inf, nan and bad --out."""

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

from reasonlens import cli

ROOT = Path(__file__).resolve().parents[1]
_loaded = {}


def script(rel: str):
    if rel not in _loaded:
        spec = importlib.util.spec_from_file_location("script_" + rel.replace("/", "_")[:-3], ROOT / rel)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        _loaded[rel] = module
    return _loaded[rel]


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "plain.txt"
    path.write_text("not a folder")
    return path


CASES = [
    ("experiments/matching_init.py", ["--steps", "0"], "'0'"),
    ("experiments/matching_init.py", ["--lr", "inf"], "'inf'"),
    ("experiments/matching_init.py", ["--seeds", "-1"], "'-1'"),
    ("experiments/matching_init.py", ["--gammas", "nan"], "'nan'"),
    ("experiments/matching_init.py", ["--out", "{file}"], "plain.txt is a file"),
    ("experiments/matching_noise.py", ["--d-model", "0"], "'0'"),
    ("experiments/matching_noise.py", ["--out", "{file}/sub"], "plain.txt is a file"),
    ("experiments/depth_vs_steps.py", ["--layers", "0"], "'0'"),
    ("experiments/depth_vs_steps.py", ["--margin", "-1"], "'-1'"),
    ("experiments/matching_mechanism.py", ["--examples", "0"], "'0'"),
    ("experiments/matching_mechanism.py", ["--checkpoint", "{file}", "--out", "{tmp}/o"], "plain.txt: not a"),
    ("experiments/implicit_cot.py", ["--digits", "0"], "'0'"),
    ("experiments/implicit_cot.py", ["--decode-batch-size", "x"], "'x'"),
    ("experiments/probe_emulated_states.py", ["--max-iter", "0"], "'0'"),
    ("experiments/probe_emulated_states.py", ["--seed", "-3"], "'-3'"),
    ("experiments/scratchpad.py", ["--n-test", "0"], "'0'"),
    ("experiments/scratchpad.py", ["--out", "{file}"], "plain.txt is a file"),
    ("benchmarks/train_throughput.py", ["--threads", "0"], "'0'"),
    ("benchmarks/train_throughput.py", ["--rounds", "0"], "'0'"),
    ("benchmarks/train_throughput.py", ["--batch", "nan"], "'nan'"),
    ("benchmarks/probe_sweep.py", ["--examples", "0"], "'0'"),
    ("benchmarks/probe_sweep.py", ["--seed", "-1"], "'-1'"),
    ("benchmarks/grid_throughput.py", ["--runs", "0"], "'0'"),
    ("benchmarks/grid_throughput.py", ["--steps", "x"], "'x'"),
    ("benchmarks/attribution_patching.py", ["--examples", "0"], "'0'"),
    ("benchmarks/attribution_patching.py", ["--repeats", "x"], "'x'"),
]


@pytest.mark.parametrize(
    "rel,argv,named", CASES, ids=[f"{c[0].split('/')[1]}:{' '.join(c[1])}" for c in CASES]
)
def test_bad_input_is_one_line_exit_2(rel, argv, named, a_file, tmp_path, capsys):
    argv = [a.format(file=a_file, tmp=tmp_path) for a in argv]
    code = cli.run(script(rel).main, argv)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert named in lines[0]
    assert "Traceback" not in err


def _boom(argv):
    raise FileNotFoundError("no data file at /nowhere/x.txt")


def test_expected_error_line_and_debug_traceback(capsys, monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    assert cli.run(_boom, []) == 2
    assert capsys.readouterr().err == "error: no data file at /nowhere/x.txt\n"
    assert cli.run(_boom, ["--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    assert cli.run(_boom, []) == 2
    assert "Traceback" in capsys.readouterr().err


def test_bug_keeps_its_traceback(capsys):
    def bug(argv):
        raise ZeroDivisionError("division by zero")

    assert cli.run(bug, []) == 1
    assert "Traceback" in capsys.readouterr().err


def test_string_system_exit_becomes_error_line(capsys):
    def old_style(argv):
        raise SystemExit("--data: no folder at /x")

    assert cli.run(old_style, []) == 2
    assert capsys.readouterr().err == "error: --data: no folder at /x\n"
    assert cli.run(lambda argv: 0, []) == 0


@pytest.mark.parametrize("fn,text", [(cli.positive_int, "0"), (cli.seed, "-1"), (cli.finite_float, "inf"),
                                     (cli.positive_float, "nan"), (cli.nonneg_float, "-0.5"),
                                     (cli.positive_int, "1.5")])  # fmt: skip
def test_validators_reject(fn, text):
    with pytest.raises(argparse.ArgumentTypeError, match=repr(text)):
        fn(text)


def test_validators_accept(tmp_path):
    assert cli.positive_int("3") == 3 and cli.seed("0") == 0 and cli.nonneg_float("0") == 0.0
    assert cli.out_dir(str(tmp_path / "new" / "deeper")) == tmp_path / "new" / "deeper"


def test_throughput_benchmark_runs_on_either_transformerlens_line(capsys):
    """On 3.x a tiny measurement against HookedTransformer; on 4.x one line and a JSON 'unavailable'."""
    import json

    from reasonlens.models.tl_compat import hooked_transformer_available

    argv = ["--layers", "1", "--d-model", "16", "--heads", "2", "--d-mlp", "32", "--vocab", "11"]
    argv += ["--seq", "4", "--batch", "2", "--warmup", "0", "--rounds", "1"]
    code = cli.run(script("benchmarks/train_throughput.py").main, argv)
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    out = json.loads(lines[-1])
    if hooked_transformer_available():
        assert out["speedup_fp32"] > 0
    else:
        assert len(lines) == 2 and lines[0].startswith("baseline unavailable: ")
        assert out["baseline"] == "unavailable"


def test_a_failed_grid_is_one_error_line_exit_2(tmp_path, capsys, monkeypatch):
    from reasonlens.training.matching_runs import GridFailed

    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)

    def grid_main(argv):
        raise GridFailed({"s0": "RuntimeError: disk on fire"}, tmp_path, finished=1)

    assert issubclass(GridFailed, cli.ReportedError) and issubclass(GridFailed, RuntimeError)
    assert cli.run(grid_main, []) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: 1 of 2 run(s) failed (s0: RuntimeError: disk on fire)"
    )
    assert str(tmp_path / "results.csv") in lines[0] and "rerun the same command" in lines[0]
    assert cli.run(grid_main, ["--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    "rel", ["experiments/matching_init.py", "experiments/matching_noise.py", "experiments/depth_vs_steps.py"]
)
def test_grid_scripts_report_failed_runs_in_one_line(rel, tmp_path, capsys, monkeypatch):
    import reasonlens.training.matching_runs as mr

    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)

    def execute(run, out_dir, force=False):
        raise RuntimeError(f"disk on fire in {run.name}")

    monkeypatch.setattr(mr, "execute", execute)  # every run fails at once: no training
    out = tmp_path / "out"
    code = cli.run(script(rel).main, ["--quick", "--out", str(out), "--no-progress", "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1], err
    assert "run(s) failed (" in errors[0] and "RuntimeError: disk on fire in " in errors[0]
    assert "no run finished" in errors[0] and "rerun the same command" in errors[0]
