"""The depth-versus-steps experiment: quick mode end to end, the grid it builds, bad input."""

import json

import pandas as pd
import pytest

from tests.conftest import load_experiment
from tests.experiments.report_check import check_report

exp = load_experiment("depth_vs_steps")


def test_quick_mode_end_to_end(tmp_path, no_static_export, capsys):
    out = tmp_path / "dv"
    assert exp.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    results = pd.read_csv(out / "results.csv")
    # L = 2: k up to its upper bound 1 plus one; L = 3: capped at k_max = 3; two orders
    cells = set(zip(results.n_layers, results.k))
    assert cells == {(2, 1), (2, 2), (3, 1), (3, 2), (3, 3)} and len(results) == 10
    assert set(results.order) == {"random", "favourable"}
    assert {"n_layers", "k", "order", "seed", "accuracy", "test_acc", "serial_bound", "upper_bound"} <= set(
        results.columns
    )
    assert (results.accuracy == results.train_acc).all() and results.accuracy.between(0, 1).all()
    assert (out / "heatmap.html").stat().st_size > 10_000 and (out / "heatmap_test.html").exists()
    # the quick preset's threshold is 0, so some run "beats" the serial bound and gets probed
    analysis = json.loads((out / "analysis.json").read_text())["beyond_serial"]
    assert analysis["k"] > analysis["n_layers"] - 1
    probes = pd.read_csv(out / "probes.csv")
    assert set(probes.target) == {f"hop{j}" for j in range(analysis["k"] + 1)}
    assert set(probes.position) == {2 * (analysis["k"] + 1)}  # the query, with margin 1
    assert (out / "probes.html").exists() and (out / "attention.csv").exists()
    from tests.experiments.report_check import flat_title

    for fig_name in ("probes", "attention"):  # the analysed run is named in the figure
        title = flat_title(out / f"{fig_name}.html")
        assert f"{analysis['run']}:{out}" in title and "(sha256" in title, title
    printed = capsys.readouterr().out
    assert "trained on order = favourable (accuracy" in printed and "(acc_other_order" in printed
    assert results.acc_other_order.between(0, 1).all()
    assert list(results.order_only_share) == [1 / {1: 1, 2: 2, 3: 6}[k] for k in results.k]
    figures = ["heatmap", "heatmap_test", "probes", "attention"]
    check_report(out, figures, ["results.csv", "curves.csv", "probes.csv", "attention.csv"])


def test_grid_follows_the_bounds_and_the_orders():
    args = exp.parse_args(
        ["--layers", "2", "4", "--k-max", "9", "--orders", "favourable", "--seeds", "1", "2"]
    )
    runs = exp.build_runs(exp.resolve_preset(args), args)
    ks = {(r.labels["n_layers"], r.labels["k"]) for r in runs}
    assert ks == {(2, 1), (2, 2)} | {(4, k) for k in range(1, 10)}
    assert all(r.order == "path_reverse" for r in runs) and len(runs) == 2 * 11
    r = next(r for r in runs if r.labels["k"] == 9)
    assert r.seq_len == 2 * (9 + 2) + 1 and r.model.n_ctx == r.seq_len and r.steps == 9
    assert (r.labels["lower_bound"], r.labels["upper_bound"], r.labels["serial_bound"]) == (7, 13, 3)
    paper = exp.resolve_preset(exp.parse_args(["--preset", "paper"]))
    full = exp.build_runs(paper, exp.parse_args(["--preset", "paper"]))
    top = {n: max(r.labels["k"] for r in full if r.labels["n_layers"] == n) for n in paper.layers}
    assert top == {2: 2, 3: 5, 4: 14, 5: 41}  # one step past each upper bound


def test_pick_beyond_serial():
    df = pd.DataFrame({"run": list("abcd"), "n_layers": [3, 3, 2, 4], "k": [2, 3, 2, 5],
                       "serial_bound": [2, 2, 1, 3], "accuracy": [1.0, 0.99, 0.97, 0.5]})  # fmt: skip
    assert exp.pick_beyond_serial(df, 0.9).run == "b"  # b and c beat it by one step; b is more accurate
    assert exp.pick_beyond_serial(df.assign(accuracy=[1.0, 0.95, 0.97, 0.5]), 0.9).run == "c"
    assert exp.pick_beyond_serial(df, 0.995) is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--layers", "0"], "--layers: must be a positive integer; got '0'"),
        (["--k-max", "0"], "--k-max: must be a positive integer; got '0'"),
        (["--orders", "sorted"], "invalid choice: 'sorted'"),
        (["--margin", "-1"], "--margin: must be a non-negative integer; got '-1'"),
    ],
)
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        exp.parse_args(argv)
    assert message in capsys.readouterr().err
