"""The implicit-CoT experiments' --quick modes, end to end (seconds), and their argument checks."""

import importlib.util
import re
from pathlib import Path

import pandas as pd
import pytest

from reasonlens.checkpoints import stored_sha256
from tests.experiments.report_check import check_report, flat_title

ROOT = Path(__file__).resolve().parents[2]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_runs_write_results_then_probes_reuse_the_checkpoints(tmp_path, capsys):
    icot = load("implicit_cot")
    out = tmp_path / "icot"
    assert icot.main(["--quick", "--out", str(out), "--no-progress", "--html-only", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out.split("wrote:")[-1]
    for name in ("results.csv", "stages.csv", "results.html", "training.html"):
        assert str(out / name) in printed, name
    results = pd.read_csv(out / "results.csv")
    assert list(results.method) == ["no_cot", "explicit_cot", "implicit_kd", "implicit_si", "aux_running_sum"]
    assert results.test_accuracy.between(0, 1).all() and (results.n_test == 32).all()
    assert (results.n_params > 0).all() and (results.examples_per_second > 0).all()
    by = results.set_index("method")
    # the implicit model is the emulator plus the student, each with its own transformer
    assert by.n_params["implicit_kd"] > 2 * by.n_params["no_cot"]
    # distillation's training time includes its teacher's
    assert by.train_steps["implicit_kd"] > by.train_steps["explicit_cot"]
    assert by.speed_vs_nocot["no_cot"] == 1.0
    stages = pd.read_csv(out / "stages.csv")
    assert list(stages.stage) == ["nocot", "teacher", "student", "emulator", "coupled", "internalize", "aux"]
    digits = pd.read_csv(out / "answer_digits.csv")
    greedy = digits[digits.decoding == "greedy"]
    positions = greedy.groupby("method").position.apply(list).to_dict()
    assert positions == {m: list(range(6)) for m in results.method}
    # every test answer has six digits, so the positions' mean is the overall digit accuracy
    mean = greedy.groupby("method").accuracy.mean().to_dict()
    assert mean == pytest.approx(by.test_digit_accuracy.to_dict())
    forced = digits[digits.decoding == "teacher_forced"]
    assert set(forced.model) == {"student"} and list(forced.position) == list(range(6))
    assert forced.accuracy.between(0, 1).all()
    for name in ("results", "training"):
        assert (out / f"{name}.html").exists()
    check_report(out, ["results", "training"], ["results.csv", "stages.csv"])
    (teacher_dir,) = (out / "runs").glob("teacher-*")
    state = teacher_dir / "state.safetensors"
    mtime = state.stat().st_mtime_ns

    probe = load("probe_emulated_states")
    pout = tmp_path / "probes"
    argv = [
        "--quick",
        "--out",
        str(pout),
        "--runs",
        str(out / "runs"),
        "--no-progress",
        "--html-only",
        "--device",
        "cpu",
    ]
    assert probe.main(argv) == 0
    assert state.stat().st_mtime_ns == mtime  # reused, not retrained
    table = pd.read_csv(pout / "probes.csv")
    assert list(table.columns) == [
        "source", "layer", "target", "group", "metric", "score", "control_score", "selectivity",
        "n_train", "n_test", "chance",
    ]  # fmt: skip
    assert set(table.source) == {"teacher", "emulator", "coupled_emulator", "coupled_student", "nocot"}
    assert table.score.between(0, 1).all() and set(table.layer) == {0, 1}
    assert (pout / "probes.html").exists()
    printed = capsys.readouterr().out.split("wrote:")[-1]
    assert str(pout / "probes.csv") in printed and str(pout / "probes.html") in printed
    check_report(pout, ["probes"], ["probes.csv"])
    title = flat_title(pout / "probes.html")
    stages = "nocot|teacher|student|emulator|coupled|internalize|aux"
    named = re.findall(rf"({stages}):(/\S+?/model\.safetensors)\(sha256([0-9a-f]{{8}})\)", title)
    assert {"teacher", "emulator", "coupled", "nocot"} <= {stage for stage, _, _ in named}, title
    for stage, path, sha in named:  # each line names the file the stage's model was read from
        assert Path(path).parent.name.startswith(f"{stage}-") and stored_sha256(path)[:8] == sha

    answers = load("probe_implicit_answers")
    aout = tmp_path / "answers"
    assert answers.main([*argv[:2], str(aout), *argv[3:]]) == 0
    assert state.stat().st_mtime_ns == mtime
    table = pd.read_csv(aout / "answer_probes.csv")
    assert set(table.method) == {"no_cot", "implicit_si", "aux_running_sum"}
    assert set(table.layer) == {0, 1, 2} and set(table.answer_digit) == set(range(8))  # 4x4: 8 digits
    assert set(table[table.target == "running_sum"].metric) == {"r2"}
    att = pd.read_csv(aout / "answer_attention.csv")
    columns = ["method", "layer", "head", "answer_digit", "operand", "operand_digit", "weight"]
    assert list(att.columns) == columns
    # every answer position's attention over the operand digits is part of a distribution
    per_query = att.groupby(["method", "layer", "head", "answer_digit"]).weight.sum()
    assert ((per_query > 0) & (per_query <= 1 + 1e-6)).all()
    assert (aout / "answer_probes.html").exists() and (aout / "answer_attention.html").exists()
    check_report(aout, ["answer_probes", "answer_attention"], ["answer_probes.csv", "answer_attention.csv"])
    for fig_name in ("answer_probes", "answer_attention"):
        title = flat_title(aout / f"{fig_name}.html")
        for method in ("no_cot", "implicit_si", "aux_running_sum"):
            assert f"{method}={method.split('_')[0]}" in title or f"{method}=" in title, (fig_name, method)


def test_probes_take_the_distillation_chain_shape(tmp_path):
    """--kd-shape reaches the probe script: a 3-block chain is trained and probed at three layers."""
    out = tmp_path / "probes"
    argv = [
        "--quick",
        "--kd-shape",
        "3x16",
        "--out",
        str(out),
        "--no-progress",
        "--html-only",
        "--device",
        "cpu",
    ]
    assert load("probe_emulated_states").main(argv) == 0
    table = pd.read_csv(out / "probes.csv")
    kd = table[table.source.isin(["teacher", "emulator", "coupled_emulator", "coupled_student"])]
    assert set(kd.layer) == {0, 1, 2}
    assert set(table[table.source == "nocot"].layer) == {0, 1}  # the no-CoT model keeps the preset's shape
    trained = {p.name.split("-")[0] for p in (out / "runs").iterdir()}
    assert trained == {"nocot", "teacher", "student", "emulator", "coupled"}  # what the sources read, no more


def test_methods_flag_trains_only_what_the_chosen_methods_need(tmp_path):
    icot = load("implicit_cot")
    out = tmp_path / "si"
    argv = ["--quick", "--out", str(out), "--no-progress", "--html-only", "--device", "cpu"]
    assert icot.main([*argv, "--methods", "aux_running_sum", "implicit_si"]) == 0
    results = pd.read_csv(out / "results.csv")
    assert list(results.method) == ["implicit_si", "aux_running_sum"]  # canonical order
    assert results.speed_vs_nocot.isna().all()  # no baseline in this run
    assert sorted(p.name.split("-")[0] for p in (out / "runs").iterdir()) == ["aux", "internalize"]
    # another running-sum loss weight is another model: a new run folder, the others reused
    assert icot.main([*argv, "--methods", "aux_running_sum", "--aux-weight", "2.5"]) == 0
    aux = sorted(p.name for p in (out / "runs").iterdir() if p.name.startswith("aux-"))
    assert len(aux) == 2


@pytest.mark.parametrize(
    "script, argv, message",
    [
        ("implicit_cot", ["--digits", "0"], "--digits: must be a positive integer; got '0'"),
        ("implicit_cot", ["--decode-batch-size", "0"], "--decode-batch-size: must be a positive integer"),
        ("implicit_cot", ["--data", "/nonexistent/folder"], "--data: no folder at /nonexistent/folder"),
        ("implicit_cot", ["--device", "tpu9"], "--device: unknown device 'tpu9'"),
        ("probe_emulated_states", ["--max-iter", "0"], "--max-iter: must be a positive integer"),
        ("probe_emulated_states", ["--device", "tpu9"], "--device: unknown device 'tpu9'"),
        ("implicit_cot", ["--stage-steps", "student=0"], "'student=0': steps must be >= 1"),
        ("implicit_cot", ["--methods", "telepathy"], "--methods: unknown method(s) ['telepathy']"),
        ("implicit_cot", ["--workers", "0"], "--workers must be >= 1; got 0"),
        ("implicit_cot", ["--kd-shape", "12"], "expected LAYERSxWIDTH such as 12x64; got '12'"),
        ("probe_emulated_states", ["--stage-steps", "pupil=3"], "expected STAGE=N"),
        ("probe_emulated_states", ["--kd-shape", "0x64"], "expected LAYERSxWIDTH such as 12x64; got '0x64'"),
    ],
)
def test_bad_arguments_fail_before_any_work(tmp_path, script, argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        load(script).main([*argv, "--out", str(tmp_path / "out")])
    assert message in f"{exc.value.code} {capsys.readouterr().err}"
    assert not any(tmp_path.iterdir())


def test_quick_runs_default_to_their_own_folders():
    assert load("implicit_cot").parse_args(["--quick"]).out == Path("figures/implicit_cot/quick")
    assert load("implicit_cot").parse_args([]).out == Path("figures/implicit_cot")
    probe = load("probe_emulated_states")
    args = probe.parse_args(["--quick"])
    assert args.runs == Path("figures/implicit_cot/quick/runs") and args.out.name == "quick"
    assert probe.parse_args([]).runs == Path("figures/implicit_cot/runs")  # implicit_cot.py's models


def test_probe_out_alone_keeps_the_runs_under_it(tmp_path):
    probe = load("probe_emulated_states")
    for extra in ([], ["--quick"]):
        assert probe.parse_args([*extra, "--out", str(tmp_path / "p")]).runs == tmp_path / "p" / "runs"
    args = probe.parse_args(["--out", str(tmp_path / "p"), "--runs", str(tmp_path / "r")])
    assert args.runs == tmp_path / "r"


def test_authors_files_can_be_brought(tmp_path):
    from reasonlens.tasks import multiplication as M

    data_dir = tmp_path / "data"
    splits = M.make_splits((2, 2), n_train=300, n_valid=20, n_test=20, seed=5)
    M.write_file(splits["train"], data_dir / "train.txt")
    M.write_file(splits["valid"], data_dir / "valid.txt")
    M.write_file(splits["test"], data_dir / "test_bigbench.txt")
    out = tmp_path / "out"
    argv = [
        "--quick",
        "--digits",
        "2",
        "--data",
        str(data_dir),
        "--out",
        str(out),
        "--no-progress",
        "--html-only",
    ]
    assert load("implicit_cot").main(argv) == 0
    results = pd.read_csv(out / "results.csv")
    assert (results.n_test == 20).all()
    (stage_json,) = (out / "runs").glob("teacher-*/stage.json")
    assert '"data": "files:' in stage_json.read_text()


@pytest.mark.parametrize("overlap", [False, True])
def test_brought_files_of_other_digits_or_overlapping_are_refused(tmp_path, capsys, overlap):
    from reasonlens.tasks import multiplication as M

    data_dir = tmp_path / "data"
    splits = M.make_splits((2, 2), n_train=60, n_valid=10, n_test=10, seed=5)
    M.write_file(splits["train"], data_dir / "train.txt")
    M.write_file(splits["valid"], data_dir / "valid.txt")
    M.write_file(splits["train"][:10] if overlap else splits["test"], data_dir / "test.txt")
    digits, message = ("2", "test example(s) also appear in the training file") if overlap else (
        "3", "holds [(2, 2)] products but --digits is 3")  # fmt: skip
    argv = ["--quick", "--digits", digits, "--data", str(data_dir), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match=re.escape(message)):
        load("implicit_cot").main(argv)
    assert not (tmp_path / "out").exists()
