import json

import pandas as pd
import pytest
import torch

import reasonlens.training.matching_runs as mr
from reasonlens.models import Transformer
from reasonlens.training import TrainConfig
from reasonlens.training.matching_runs import MatchingRun, execute, first_step_reaching, run_grid
from tests.conftest import tiny_config


def make_run(name="r", train_steps=12, **kw):
    model = tiny_config(d_vocab=201, n_ctx=13, norm="post")
    train = TrainConfig(
        steps=train_steps, batch_size=16, lr=3e-3, warmup_steps=2, eval_every=4, progress=False, device="cpu"
    )
    return MatchingRun(name=name, model=model, train=train, n_eval=64, labels={"gamma": 0.5}, **kw)


def test_first_step_reaching():
    m = pd.DataFrame(
        {"step": [0, 10, 20, 30], "split": "test", "metric": "accuracy", "value": [0, 0.5, 0.995, 0.98]}
    )
    assert first_step_reaching(m, "test", 0.99) == 20
    assert first_step_reaching(m, "test", 0.999) is None
    assert first_step_reaching(m, "train", 0.5) is None


def test_execute_writes_a_row_and_skips_finished_runs(tmp_path):
    run = make_run()
    row = execute(run, tmp_path)
    assert row["run"] == "r" and row["gamma"] == 0.5 and row["steps"] == 12
    assert set(row) >= {"train_acc", "test_acc", "ood_acc", "step_99", "wall_time_s", "checkpoint"}
    model = Transformer.load(tmp_path / row["checkpoint"])
    assert model.cfg == run.model
    mtime = (tmp_path / row["checkpoint"]).stat().st_mtime_ns
    assert execute(run, tmp_path) == row  # finished: not retrained
    assert (tmp_path / row["checkpoint"]).stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="finished run with different settings"):
        execute(make_run(train_steps=8), tmp_path)
    forced = execute(make_run(train_steps=8), tmp_path, force=True)
    assert forced["steps"] == 8


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    def run():
        r = make_run(train_steps=12)
        r.train.checkpoint_every = 4
        return r

    straight = execute(run(), tmp_path / "a")
    real_train = mr.train

    def crash_after_step_8(*args, **kwargs):  # train to step 8 (checkpointed), then die
        real_train(*args, **{**kwargs, "stop_when": lambda m: m.step.max() >= 8})
        raise KeyboardInterrupt

    monkeypatch.setattr(mr, "train", crash_after_step_8)
    with pytest.raises(KeyboardInterrupt):
        execute(run(), tmp_path / "b")
    monkeypatch.setattr(mr, "train", real_train)
    assert not (tmp_path / "b" / "r" / "result.json").exists()
    resumed = execute(run(), tmp_path / "b")
    a = Transformer.load(tmp_path / "a" / straight["checkpoint"])
    b = Transformer.load(tmp_path / "b" / resumed["checkpoint"])
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_solved_patience_stops_runs_that_generalise(tmp_path, monkeypatch):
    real_train = mr.train
    always_right = lambda model, batch, bs: {"loss": 0.0, "accuracy": 1.0}  # noqa: E731
    monkeypatch.setattr(mr, "train", lambda *a, **k: real_train(*a, eval_fn=always_right, **k))
    row = execute(make_run(train_steps=40, solved_patience=2), tmp_path)
    assert row["stopped_early"] and row["steps"] == 4  # evaluations at steps 0 and 4 both "solved"
    assert row["step_99"] == 0
    assert not execute(make_run("slow", train_steps=8), tmp_path)["stopped_early"]


def test_run_grid_tables(tmp_path):
    runs = [make_run("a"), make_run("b", data_seed=1)]
    results, curves = run_grid(runs, tmp_path, progress=False)
    assert list(results.run) == ["a", "b"]
    assert list(results.checkpoint) == ["runs/a/model.safetensors", "runs/b/model.safetensors"]
    assert set(curves.run) == {"a", "b"} and "gamma" in curves
    on_disk = pd.read_csv(tmp_path / "results.csv")
    assert list(on_disk.run) == ["a", "b"]
    assert json.loads((tmp_path / "runs" / "a" / "result.json").read_text())["row"]["run"] == "a"
    with pytest.raises(ValueError, match="run names must be unique"):
        run_grid([make_run("a"), make_run("a")], tmp_path, progress=False)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"name": "a/b"}, r"name must be a non-empty name without '/'"),
        ({"seq_len": 15}, r"n_ctx=13 < seq_len=15"),
        ({"steps": 9}, r"steps=9 is impossible"),
        ({"n_train": 4}, r"n_train=4 < batch_size=16"),
    ],
)
def test_bad_runs_fail_before_training(kw, message):
    with pytest.raises(ValueError, match=message):
        make_run(**kw)


def test_grid_train_config_copies_the_preset_and_caps_warmup():
    from types import SimpleNamespace

    preset = SimpleNamespace(
        steps=40, batch_size=8, lr=2e-3, warmup_steps=100, min_lr=2e-4, schedule="cosine",
        eval_every=5, bf16=False, warmup_start_lr=1e-4,
    )  # fmt: skip
    tc = mr.grid_train_config(preset, seed=3, device="cpu", progress=False, desc="x")
    assert (tc.steps, tc.batch_size, tc.lr, tc.min_lr, tc.schedule) == (40, 8, 2e-3, 2e-4, "cosine")
    assert tc.warmup_steps == 10  # capped at a quarter of the steps
    assert (tc.warmup_start_lr, tc.weight_decay, tc.grad_clip) == (1e-4, 0.01, 1.0)
    assert (tc.seed, tc.eval_every, tc.bf16, tc.desc) == (3, 5, False, "x")
    assert tc.checkpoint_every == 5  # every grid run checkpoints at each evaluation (resumable)
    del preset.warmup_start_lr  # presets without the field start warm-up at 0
    preset.warmup_steps = 4
    tc = mr.grid_train_config(preset, seed=0, device="cpu", progress=False, desc="y")
    assert (tc.warmup_start_lr, tc.warmup_steps) == (0.0, 4)


def test_seed_summary_counts_seeds_reaching_99():
    results = pd.DataFrame(
        {
            "norm": ["post"] * 3 + ["pre"],
            "gamma": [0.5] * 3 + [0.5],
            "seed": [0, 1, 2, 0],
            "train_acc": [1.0, 0.8, 0.9, 0.3],
            "test_acc": [1.0, 0.6, 0.995, 0.2],
            "ood_acc": [0.4, 0.2, 0.6, 0.1],
            "step_99": [2800, None, 3600, None],
        }
    )
    table = mr.seed_summary(results).set_index("norm")
    post, pre = table.loc["post"], table.loc["pre"]
    assert post.n_seeds == 3 and post.reached_99 == 2 and pre.reached_99 == 0
    assert post.test_acc_mean == pytest.approx((1.0 + 0.6 + 0.995) / 3)
    assert post.ood_acc_sd == pytest.approx(0.2)  # sample sd of 0.4, 0.2, 0.6
    assert post.step_99_mean == 3200 and post.step_99_min == 2800 and post.step_99_max == 3600
    assert post.step_99_by_seed == "0:2800 1:- 2:3600" and pre.step_99_by_seed == "0:-"
    assert pd.isna(pre.test_acc_sd) and pd.isna(pre.step_99_mean)
    with pytest.raises(ValueError, match="lack column"):
        mr.seed_summary(results.drop(columns="ood_acc"))


def test_grid_curves_record_embedding_norms(tmp_path):
    run = make_run()
    execute(run, tmp_path)
    metrics = pd.read_csv(tmp_path / "r" / "metrics.csv")
    emb = metrics[metrics.split == "embedding"]
    assert set(emb.metric) == {"id_norm", "ood_norm", "pos_norm", "ood_id_ratio", "pos_id_ratio"}
    assert sorted(set(emb.step)) == [0, 4, 8, 12]  # at every evaluation
    at0 = emb[emb.step == 0].set_index("metric").value
    model = Transformer(run.model)  # the initial weights: untrained rows equal trained ones in scale
    ids = model.W_E[1:101].detach().norm(dim=-1).mean()
    assert at0["id_norm"] == pytest.approx(float(ids), rel=1e-5)
    assert at0["ood_id_ratio"] == pytest.approx(at0["ood_norm"] / at0["id_norm"])


def test_fingerprint_ignores_the_derived_labels_and_default_embed_scale():
    run = make_run()
    labelled = make_run()
    labelled.labels = {
        **labelled.labels,
        "precision": "fp32",
        "embed_init_scale": 1.0,
        "decay_embeddings": True,
    }
    assert run.fingerprint() == labelled.fingerprint()
    assert "embed_init_scale" not in run.fingerprint()["model"]
    assert "decay_embeddings" not in run.fingerprint()["train"]
    no_decay = make_run()
    no_decay.train = no_decay.train.__class__(**{**no_decay.train.to_dict(), "decay_embeddings": False})
    assert no_decay.fingerprint()["train"]["decay_embeddings"] is False
    bigger = make_run()
    bigger.model = bigger.model.replace(embed_init_scale=2.0)
    assert bigger.fingerprint() != run.fingerprint()
