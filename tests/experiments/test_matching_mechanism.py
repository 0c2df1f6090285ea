"""The matching-mechanism experiment: quick mode end to end, model selection, bad input."""

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

from reasonlens.models import ModelConfig, Transformer
from tests.experiments.report_check import check_report, flat_title

ROOT = Path(__file__).resolve().parents[2]


def load_experiment():
    spec = importlib.util.spec_from_file_location(
        "matching_mechanism", ROOT / "experiments/matching_mechanism.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def experiment():
    return load_experiment()


@pytest.fixture(scope="module")
def quick_run(experiment, tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    summary = experiment.main(["--quick", "--out", str(out), "--html-only"])
    return out, summary


def test_quick_mode_writes_every_table_and_figure(quick_run):
    out, summary = quick_run
    assert set(summary) == {"small_init", "large_init"}
    for name in ("probes", "attention", "matching_matrix", "patching"):
        df = pd.read_csv(out / f"{name}.csv")
        assert {"model", "layer"} <= set(df.columns) and len(df) > 0, name
        assert set(df.model) == {"small_init", "large_init"}, name
        assert (out / f"{name}.html").is_file(), name
    for name in ("probes", "patching"):
        assert "position" in pd.read_csv(out / f"{name}.csv").columns
    ood = pd.read_csv(out / "ood.csv")
    assert {"model", "variant", "accuracy"} <= set(ood.columns)
    assert set(ood.variant) == {"raw", "rescaled", "random_directions"} and len(ood) == 6
    answers = pd.read_csv(out / "ood_answers.csv")
    assert set(answers.category) == {"answer", "hop1_node", "other_in_context", "not_in_context"}
    assert (answers.groupby(["model", "variant"]).fraction.sum().round(6) == 1).all()
    assert (out / "ood.html").is_file()
    scores = pd.read_csv(out / "matching_scores.csv")
    assert {"embedding", "embedding_positions", "embedding_ood", "stream", "stream_ood"} == set(
        scores.variant
    )
    assert (out / "information_flow.html").is_file() and (out / "information_flow_large_init.html").is_file()
    probes = pd.read_csv(out / "probes.csv")
    assert set(probes.target) == {"hop0", "hop1", "hop2", "parent", "token"}
    models = pd.read_csv(out / "models.csv").set_index("model")
    assert models.loc["small_init", "gamma"] > models.loc["large_init", "gamma"]
    saved = json.loads((out / "summary.json").read_text())
    assert saved["summary"]["small_init"]["accuracy"].keys() == {"train", "test", "ood"}
    figures = ["probes", "attention", "matching_matrix", "patching", "ood", "information_flow",
               "information_flow_large_init"]  # fmt: skip
    csvs = ["models.csv", "probes.csv", "patching.csv", "ood.csv", "information_flow.csv"]
    check_report(out, figures, csvs)


def test_quick_mode_writes_path_and_attribution_patching(quick_run):
    out, summary = quick_run
    paths = pd.read_csv(out / "path_patching.csv")
    assert set(paths.model) == {"small_init", "large_init"} and set(paths.counterfactual) == {
        "child",
        "query",
    }
    assert {"sender", "receiver", "receiver_input", "position", "effect", "score"} <= set(paths.columns)
    assert set(paths.receiver_input) == {"q", "k", "v", "mlp", "logits", "all"}
    assert set(paths.sender) == {f"L{layer} {kind}" for layer in range(3) for kind in ("attn", "mlp")}
    assert set(paths.position) == set(range(13)) and (paths.n_examples == 10).all()
    attribution = pd.read_csv(out / "attribution.csv")
    assert set(attribution.site) == {"resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"}
    assert len(attribution) == 2 * 2 * 3 * 5 * 13  # models x counterfactuals x layers x sites x positions
    assert attribution[["score_attribution", "score_exact"]].notna().all().all()
    for name in ("path_patching", "attribution", "logit_lens", "knockout"):
        assert (out / f"{name}.html").is_file(), name
    lens = pd.read_csv(out / "logit_lens.csv")
    assert set(lens.model) == {"small_init", "large_init"} and "answer" in set(lens.target)
    knockout = pd.read_csv(out / "knockout.csv")
    assert len(knockout) == 2 * 3 * 13  # models x layers x keys into the answer position (1 head)
    assert (knockout.groupby("model").effect.apply(lambda e: e.is_monotonic_decreasing)).all()
    for model in ("small_init", "large_init"):
        agree = summary[model]["attribution_agreement"]
        assert set(agree) == {"child", "query"} and agree["child"]["n"] == 3 * 5 * 13
        top = summary[model]["path_patching_child_top"]
        assert len(top) == 5 and top[0]["effect"] <= top[-1]["effect"] and "->" in top[0]["path"]


def test_runs_are_picked_from_matching_init_results(experiment, tmp_path):
    rows = []
    for gamma, seed, acc in ((1.0, 0, 0.2), (1.0, 1, 0.9), (0.5, 0, 0.7), (1.0, 2, 0.95)):
        norm = "pre" if seed == 2 else "post"  # the best gamma-1 run is pre-LN: not eligible
        cfg = ModelConfig(
            n_layers=3, d_model=8, d_mlp=16, n_ctx=13, d_vocab=201, norm=norm, gamma=gamma, seed=seed
        )
        rel = f"runs/g{gamma}_{norm}_s{seed}/model.safetensors"
        Transformer(cfg).save(tmp_path / rel)
        rows.append(
            dict(run=f"g{gamma}_s{seed}", gamma=gamma, norm=norm, seed=seed, test_acc=acc, checkpoint=rel)
        )
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    chosen = experiment.select_runs(tmp_path)
    assert chosen["small_init"][0] == tmp_path / "runs/g1.0_post_s1/model.safetensors"
    assert chosen["large_init"][0] == tmp_path / "runs/g0.5_post_s0/model.safetensors"
    (tmp_path / "runs/g0.5_post_s0/model.safetensors").unlink()
    with pytest.raises(ValueError, match="no checkpoint at .*g0.5_post_s0"):
        experiment.select_runs(tmp_path)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--checkpoint", "nowhere/model.safetensors"], "no model file at nowhere/model.safetensors"),
        (["--results", "nowhere"], "no results.csv in nowhere"),
        (["--examples", "5"], "at least 100"),
    ],
)
def test_bad_input_is_named_before_any_work(experiment, argv, message, capsys):
    with pytest.raises(SystemExit):
        experiment.main(argv)
    assert message in capsys.readouterr().err


def test_help(experiment, capsys):
    with pytest.raises(SystemExit) as exit_info:
        experiment.main(["--help"])
    assert exit_info.value.code == 0
    assert "--checkpoint" in capsys.readouterr().out


def test_stdout_gets_a_short_summary_not_the_json(experiment):
    summary = {
        "small_init": {
            "accuracy": {"train": 1.0, "test": 0.99, "ood": 0.9},
            "hop_first_site": {"hop0": "L0 resid_pre", "hop1": "L1 resid_post", "hop2": None},
            "hop_probe_by_site": {"hop0": {f"site{i}": 0.5 for i in range(40)}},
            "matching_matrix": {"L0H0": {"diag_argmax_frac": 0.2, "diag_zscore": 1.0},
                                "L1H0": {"diag_argmax_frac": 0.97, "diag_zscore": 8.5}},
        }
    }  # fmt: skip
    lines = experiment.short_summary(summary)
    assert len(lines) == 3
    assert lines[0] == "small_init: accuracy train 1.000 test 0.990 ood 0.900"
    assert "hop1 at L1 resid_post" in lines[1] and "hop2 at none" in lines[1]
    assert "L1H0" in lines[2] and "0.97" in lines[2]


def test_figures_name_the_checkpoints_they_analysed(quick_run):
    from reasonlens.checkpoints import stored_sha256

    out, _ = quick_run
    models = pd.read_csv(out / "models.csv").set_index("model")
    for fig_name, expected in [("probes", ["small_init", "large_init"]), ("information_flow", ["small_init"]),
                               ("information_flow_large_init", ["large_init"])]:  # fmt: skip
        title = flat_title(out / f"{fig_name}.html")
        for name in models.index:
            path = models.loc[name, "checkpoint"]
            named = f"{name}:{path}" in title
            assert named == (name in expected), (fig_name, name, title)
            if named:
                assert f"sha256{stored_sha256(path)[:8]}" in title
