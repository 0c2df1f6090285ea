"""experiments/decomposition.py: --quick end to end, and bad input is one line, exit 2."""

import pandas as pd
import pytest

from reasonlens import cli
from tests.conftest import load_experiment
from tests.experiments.report_check import check_report


def test_quick_writes_results_and_figure(tmp_path, capsys, no_static_export):
    script = load_experiment("decomposition")
    out = tmp_path / "d"
    assert (
        script.main(["--quick", "--out", str(out), "--no-progress", "--html-only", "--seeds", "0", "1"]) == 0
    )
    printed = capsys.readouterr().out
    for name in ("results.csv", "predictions.csv", "training.csv", "accuracy_by_steps.html"):
        assert str(out / name) in printed.split("wrote:")[-1], name
    res = pd.read_csv(out / "results.csv")
    assert {"method", "n_steps", "accuracy", "seed"} <= set(res.columns)
    assert set(res.method) == {"cot", "decomposer_solver", "oracle_solver", "decomposer"}
    assert set(res.seed) == {0, 1} and set(res.n_steps) == {2, 3, 4, 5}
    assert res.accuracy.between(0, 1).all()
    assert "Socratic CoT 21.1" in printed
    check_report(out, ["accuracy_by_steps"], ["results.csv", "predictions.csv", "training.csv"])


@pytest.mark.parametrize(
    "argv,named",
    [(["--n-steps", "7"], "got 7"), (["--steps", "0"], "'0'"), (["--seeds", "-1"], "'-1'"),
     (["--out", "{file}/sub"], "plain.txt is a file"), (["--device", "nonsense"], "'nonsense'")],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2(argv, named, tmp_path, capsys):
    script = load_experiment("decomposition")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    argv = [a.format(file=plain) for a in argv] + ["--quick", "--out", str(tmp_path / "o")] * (
        "--out" not in argv
    )
    code = cli.run(script.main, argv)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], err
    assert not (tmp_path / "o" / "results.csv").exists()


def write_jsonl(path, problems, socratic=True):
    import json

    lines = [
        json.dumps(
            {
                "question": p.question,
                "answer": p.socratic() if socratic else p.socratic().replace(" ** ", " "),
            }
        )
        for p in problems
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_quick_on_gsm8k_socratic_files(tmp_path, capsys, no_static_export):
    from reasonlens.tasks.wordproblems import generate_problems

    train = write_jsonl(tmp_path / "train.jsonl", generate_problems(40, "train", seed=4))
    test = write_jsonl(tmp_path / "test.jsonl", generate_problems(6, "test", seed=4, steps=[2, 3]))
    script = load_experiment("decomposition")
    out = tmp_path / "g"
    argv = ["--quick", "--out", str(out), "--no-progress", "--html-only"]
    assert script.main([*argv, "--gsm8k-train", str(train), "--gsm8k-test", str(test)]) == 0
    res = pd.read_csv(out / "results.csv")
    assert set(res.n_steps) == {2, 3} and (res.groupby("method").n.sum() == 6).all()
    # the generated-data checkpoints are not reused for other data
    assert script.main(argv) == 0
    assert len(list((out / "runs").glob("cot-s0-*"))) == 2


def test_gsm8k_without_sub_questions_or_one_file_is_one_line(tmp_path, capsys):
    from reasonlens.tasks.wordproblems import generate_problems

    plain = write_jsonl(tmp_path / "plain.jsonl", generate_problems(3, "train"), socratic=False)
    script = load_experiment("decomposition")
    out = ["--quick", "--out", str(tmp_path / "o")]
    for argv, named in (
        (["--gsm8k-train", str(plain), "--gsm8k-test", str(plain)], f"{plain}:1: a step has no sub-question"),
        (["--gsm8k-train", str(plain)], "give both --gsm8k-train and --gsm8k-test"),
        (["--gsm8k-train", str(tmp_path / "none.jsonl"), "--gsm8k-test", str(plain)], "no file at"),
    ):
        assert cli.run(script.main, [*out, *argv]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and named in lines[0], lines
