"""experiments/decomposition.py: --quick end to end, and bad input is one line, exit 2."""

import pandas as pd
import pytest

from reasonlens import cli
from tests.conftest import load_experiment


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
