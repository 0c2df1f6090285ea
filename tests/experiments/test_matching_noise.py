"""The attention-noise experiment: quick mode end to end, the grid it builds, bad input."""

import pandas as pd
import pytest

from tests.conftest import load_experiment
from tests.experiments.report_check import check_report

exp = load_experiment("matching_noise")


def test_quick_mode_end_to_end(tmp_path, no_static_export, capsys):
    out = tmp_path / "mn"
    assert exp.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    results = pd.read_csv(out / "results.csv")
    assert list(results.label) == ["none", "fixed a=1", "learned a=1", "identity a=1"]
    expected = {"run", "setting", "norm", "gamma", "variant", "alpha", "seed", "train_acc", "test_acc",
                "ood_acc", "step_99", "steps", "wall_time_s", "checkpoint"}  # fmt: skip
    assert expected <= set(results.columns)
    assert results[["train_acc", "test_acc", "ood_acc"]].apply(lambda c: c.between(0, 1)).all().all()
    strengths = pd.read_csv(out / "strengths.csv")
    # 3 noisy runs x 3 layers x 1 head x 2 matrices; the learned strengths moved, the fixed ones did not
    assert len(strengths) == 3 * 3 * 2
    assert (strengths[strengths.label != "learned a=1"].alpha == 1.0).all()
    assert (strengths[strengths.label == "learned a=1"].alpha != 1.0).any()
    assert len(pd.read_csv(out / "noise_share.csv")) == 3 * 3 * 2
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.variant) == list(results.label) and (summary.seeds == 1).all()
    assert (out / "variants.html").stat().st_size > 10_000 and (out / "learning_curves.html").exists()
    printed = capsys.readouterr().out
    assert "test_minus_none" in printed and "results.csv" in printed
    csvs = ["results.csv", "curves.csv", "strengths.csv", "noise_share.csv", "summary.csv"]
    check_report(out, ["variants", "learning_curves"], csvs)
    # a second run reuses every finished run
    before = {c: (out / c).stat().st_mtime_ns for c in results.checkpoint}
    assert exp.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    assert before == {c: (out / c).stat().st_mtime_ns for c in results.checkpoint}


def test_overrides_build_the_requested_grid(tmp_path):
    args = exp.parse_args(["--settings", "pre:1", "post:0.5", "--variants", "none", "fixed:0.3", "learned:0",
                           "--seeds", "3", "--steps", "40", "--d-model", "32"])  # fmt: skip
    runs = exp.build_runs(args)
    assert [r.name for r in runs] == [
        "pre_g1_none_s3", "pre_g1_fixed0.3_s3", "pre_g1_learned0_s3",
        "post_g0.5_none_s3", "post_g0.5_fixed0.3_s3", "post_g0.5_learned0_s3",
    ]  # fmt: skip
    r = runs[1]
    assert (r.model.noise, r.model.noise_alpha, r.model.norm, r.model.gamma) == ("fixed", 0.3, "pre", 1.0)
    assert (
        r.model.d_model == r.model.d_head == 32 and r.train.steps == 40 and r.labels["label"] == "fixed a=0.3"
    )
    # all variants of one seed start from the same weights
    assert len({(x.model.seed, x.model.gamma, x.model.norm) for x in runs[:3]}) == 1
    paper = exp.build_runs(exp.parse_args(["--preset", "paper"]))
    assert paper[0].model.d_model == 400 and paper[0].n_train == 270_000 and paper[0].model.init == "uniform"
    # settings from a matching_init results table: the cells where most seeds never reached 99%
    table = pd.DataFrame({"norm": ["post", "post", "pre", "pre"], "gamma": [0.5, 1.0, 0.5, 0.5],
                          "step_99": [2700, None, None, 3000]})  # fmt: skip
    table.to_csv(tmp_path / "results.csv", index=False)
    assert exp.parse_args(["--settings-from", str(tmp_path)]).settings == (("post", 1.0),)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--variants", "orthogonal:1"], "NOISE[:ALPHA] with NOISE in"),
        (["--variants", "fixed"], "needs a strength, e.g. fixed:1.0"),
        (["--variants", "fixed:0"], "strength must be finite and > 0"),
        (["--variants", "identity:x"], "strength 'x' is not a number"),
        (["--settings", "mid:1"], "a setting is NORM:GAMMA"),
        (["--settings", "post:-1"], "gamma must be finite and >= 0"),
        (["--settings-from", "/nonexistent"], "no results.csv in /nonexistent"),
        (["--steps", "0"], "--steps: must be a positive integer; got '0'"),
    ],
)
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        exp.parse_args(argv)
    assert message in capsys.readouterr().err
