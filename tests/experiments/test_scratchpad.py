"""experiments/scratchpad.py: --quick end to end for both tasks, and its argument checks."""

import pandas as pd
import pytest

from reasonlens import cli
from reasonlens.checkpoints import stored_sha256
from tests.conftest import load_experiment
from tests.experiments.report_check import check_report, flat_title


@pytest.mark.parametrize("task", ["addition", "polynomial"])
def test_quick_run_writes_results_figure_and_probes(task, tmp_path, capsys, no_static_export):
    exp = load_experiment("scratchpad")
    out = tmp_path / task
    argv = ["--task", task, "--quick", "--out", str(out), "--no-progress", "--html-only", "--device", "cpu"]
    assert exp.main(argv) == 0
    kind = "carry" if task == "addition" else "sum"
    printed = capsys.readouterr().out.split("wrote:")[-1]
    for name in ("results.csv", "accuracy.html", f"{kind}_probes.csv", f"{kind}_probes.html"):
        assert (out / name).exists() and str(out / name) in printed, name
    results = pd.read_csv(out / "results.csv")
    assert {"task", "method", "digits", "accuracy", "seed"} <= set(results.columns)
    assert set(results.task) == {task} and set(results.seed) == {0}
    for method in ("direct", "scratchpad"):
        sub = results[results.method == method]
        assert sub.digits.tolist() == list(range(1, 11))
        assert sub.in_distribution.tolist() == [True] * 8 + [False] * 2
    assert results.accuracy.between(0, 1).all()
    assert results.groupby("method").n_params.first().nunique() == 1  # the same model size
    assert results.groupby("method").train_steps.first().nunique() == 1  # and budget
    probes = pd.read_csv(out / f"{kind}_probes.csv")
    assert set(probes.depth) == {0, 1, 2}  # the quick models have 2 layers
    assert set(probes.target) == {f"{kind}{i}" for i in (range(1, 9) if kind == "carry" else range(8))}
    assert probes.score.between(0, 1).all()
    probed = out / "runs" / "direct-seed0" / "model.safetensors"
    assert probed.exists()
    title = flat_title(out / f"{kind}_probes.html")
    assert f"{probed}(sha256{stored_sha256(probed)[:8]}):2Ld32" in title  # the probed model, named
    check_report(out, ["accuracy", f"{kind}_probes"], ["results.csv", f"{kind}_probes.csv"])


@pytest.mark.parametrize(
    "argv,named",
    [(["--task", "multiply"], "'multiply'"), (["--seeds", "-1"], "'-1'"), (["--seeds", "1", "1"], "repeated"),
     (["--steps", "0"], "'0'"), (["--device", "cuda:7"], "cuda")],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2(argv, named, tmp_path, capsys):
    exp = load_experiment("scratchpad")
    code = cli.run(exp.main, [*argv, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and named in err[0], err
    assert not (tmp_path / "o" / "results.csv").exists()
