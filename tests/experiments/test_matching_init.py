import pandas as pd
import pytest

from tests.conftest import load_experiment
from tests.experiments.report_check import check_report

exp = load_experiment("matching_init")


def test_quick_mode_end_to_end(tmp_path, no_static_export, capsys):
    out = tmp_path / "mi"
    assert exp.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 4 and set(results.norm) == {"pre", "post"} and set(results.gamma) == {0.5, 1.0}
    expected = {
        "run",
        "gamma",
        "norm",
        "seed",
        "init",
        "steps",
        "train_acc",
        "test_acc",
        "ood_acc",
        "step_99",
        "wall_time_s",
        "checkpoint",
    }
    assert expected <= set(results.columns)
    assert results[["train_acc", "test_acc", "ood_acc"]].apply(lambda c: c.between(0, 1)).all().all()
    for ckpt in results.checkpoint:
        assert (out / ckpt).is_file()
    curves = pd.read_csv(out / "curves.csv")
    assert {"step", "split", "metric", "value", "run", "gamma", "norm", "seed"} <= set(curves.columns)
    assert set(results.precision) <= {"fp32", "bf16"} and results.precision.nunique() == 1
    assert set(curves[curves.split == "embedding"].metric) >= {"id_norm", "ood_norm", "ood_id_ratio"}
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 4 and {"n_seeds", "test_acc_mean", "test_acc_sd", "reached_99"} <= set(
        summary.columns
    )
    assert (out / "embedding_norms.html").exists()
    assert (out / "accuracy_vs_gamma.html").stat().st_size > 10_000
    assert (out / "learning_curves.html").exists()
    printed = capsys.readouterr().out
    assert "small init (gamma=1) + post-LN" in printed and "results.csv" in printed
    assert f"precision {results.precision.iloc[0]}" in printed
    check_report(out, ["accuracy_vs_gamma", "learning_curves", "embedding_norms"],
                 ["results.csv", "curves.csv", "summary.csv"])  # fmt: skip
    # a second run reuses every finished run: same table, no retraining
    before = {c: (out / c).stat().st_mtime_ns for c in results.checkpoint}
    assert exp.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), results)
    assert before == {c: (out / c).stat().st_mtime_ns for c in results.checkpoint}


def test_overrides_build_the_requested_grid():
    args = exp.parse_args(
        ["--gammas", "0.3", "0.8", "0.3", "--norms", "post", "--seeds", "1", "2", "--steps", "50"]
    )
    runs = exp.build_runs(args)
    assert [r.name for r in runs] == ["g0.3_post_s1", "g0.3_post_s2", "g0.8_post_s1", "g0.8_post_s2"]
    assert all(r.train.steps == 50 and r.model.norm == "post" for r in runs)
    assert runs[2].model.gamma == 0.8 and runs[3].model.seed == 2
    paper = exp.build_runs(exp.parse_args(["--preset", "paper"]))
    assert paper[0].model.d_model == 400 and paper[0].model.init == "uniform" and paper[0].n_train == 270_000
    assert paper[0].train.batch_size == 1000 and paper[0].train.steps == 27_000
    small = exp.build_runs(exp.parse_args(["--batch-size", "32", "--eval-every", "7", "--seeds", "0"]))
    assert {(r.train.batch_size, r.train.eval_every) for r in small} == {(32, 7)}
    assert exp.build_runs(exp.parse_args([]))[0].train.batch_size == 256  # the preset's, untouched


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--gammas", "-1"], "--gammas: must be a non-negative number; got '-1'"),
        (["--steps", "0"], "--steps: must be a positive integer; got '0'"),
        (["--norms", "mid"], "invalid choice: 'mid'"),
        (["--lr", "0"], "--lr: must be a positive number; got '0'"),
        (["--batch-size", "0"], "--batch-size: must be a positive integer; got '0'"),
    ],
)
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        exp.parse_args(argv)
    assert message in capsys.readouterr().err


def test_default_grid_has_three_seeds_and_the_remedy_flag_reaches_the_model():
    runs = exp.build_runs(exp.parse_args([]))
    assert len(runs) == 2 * 2 * 3 and {r.model.seed for r in runs} == {0, 1, 2}
    assert exp.build_runs(exp.parse_args(["--quick"]))[0].train.steps == 30  # --quick stays tiny
    big = exp.build_runs(exp.parse_args(["--embed-init-scale", "2", "--norms", "post", "--gammas", "0.5"]))
    assert all(r.model.embed_init_scale == 2.0 and r.labels["embed_init_scale"] == 2.0 for r in big)
    assert big[0].name == "g0.5_post_e2_s0" and all(r.train.decay_embeddings for r in big)
    nd = exp.build_runs(
        exp.parse_args(["--no-embed-decay", "--norms", "post", "--gammas", "0.5", "--seeds", "0"])
    )
    assert [r.name for r in nd] == ["g0.5_post_nd_s0"] and not nd[0].train.decay_embeddings
    assert nd[0].labels["decay_embeddings"] is False
    args = exp.parse_args(["--precision", "bf16"])
    assert args.precision == "bf16" and exp.parse_args([]).precision == "auto"


def test_lr_over_std_is_stated_against_the_teaching_range():
    runs = exp.build_runs(exp.parse_args(["--norms", "post", "--seeds", "0", "--gammas", "0.5", "1"]))
    ratios = {r.model.gamma: r.labels["lr_over_std"] for r in runs}
    assert ratios[0.5] == pytest.approx(1e-3 * 128**0.5) and ratios[1.0] == pytest.approx(1e-3 * 128)
    note = exp.lr_std_note(runs)
    assert "gamma 0.5: 0.0113 (inside)" in note and "gamma 1: 0.128 (outside)" in note
    slow = exp.build_runs(
        exp.parse_args(["--norms", "post", "--seeds", "0", "--gammas", "1", "--lr", "1e-4"])
    )
    assert "gamma 1: 0.0128 (inside)" in exp.lr_std_note(slow)
