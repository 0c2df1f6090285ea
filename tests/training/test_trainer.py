import dataclasses
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from reasonlens.models import Transformer
from reasonlens.tasks import Batch, matching
from reasonlens.training import (
    FixedSource,
    StreamSource,
    TrainConfig,
    TrainingDiverged,
    evaluate_lm,
    lr_at,
    train,
)
from reasonlens.training.checkpoint import read_state_info
from tests.conftest import tiny_config


def small_model(**kw):
    return Transformer(tiny_config(d_vocab=201, n_ctx=13, norm="post", **kw))


def stream(seed=0):
    return StreamSource(matching.batch_maker(), seed=seed)


def cfg(**kw):
    base = dict(steps=20, batch_size=16, lr=3e-3, warmup_steps=4, eval_every=5, progress=False, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_lr_schedule_warmup_then_cosine():
    c = TrainConfig(steps=110, lr=2e-4, warmup_steps=10, warmup_start_lr=5e-5, min_lr=2e-5)
    assert lr_at(0, c) == pytest.approx(5e-5 + 1.5e-4 / 10)
    assert lr_at(9, c) == pytest.approx(2e-4)
    assert lr_at(10, c) == pytest.approx(2e-4)
    assert lr_at(60, c) == pytest.approx(2e-5 + 0.5 * 1.8e-4)
    assert lr_at(110, c) == pytest.approx(2e-5)
    values = [lr_at(s, c) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert lr_at(50, TrainConfig(steps=100, lr=1e-3, schedule="constant")) == 1e-3
    assert lr_at(50, TrainConfig(steps=100, lr=1e-3, schedule="linear")) == pytest.approx(5e-4)


def test_training_reduces_the_loss_and_records_tidy_metrics(tmp_path):
    evals = {
        "train": matching.generate(256, seed=9).batch(),
        "test": matching.generate(256, "test", seed=9).batch(),
    }
    result = train(small_model(), stream(), cfg(steps=40), evals, out_dir=tmp_path)
    m = result.metrics
    assert list(m.columns) == ["step", "split", "metric", "value"]
    assert sorted(m.step.unique()) == [0, 5, 10, 15, 20, 25, 30, 35, 40]
    loss = m[(m.split == "train") & (m.metric == "loss")].set_index("step").value
    assert loss[40] < loss[0] - 0.5
    on_disk = pd.read_csv(tmp_path / "metrics.csv")
    pd.testing.assert_frame_equal(on_disk, m, check_dtype=False)
    assert (tmp_path / "model.safetensors").exists() and read_state_info(tmp_path / "state.safetensors")[
        "step"
    ] == 40
    loaded = Transformer.load(tmp_path / "model.safetensors")
    assert evaluate_lm(loaded, evals["train"])["loss"] == pytest.approx(loss[40], rel=1e-5)


class Interrupt(Exception):
    pass


def crashing(source, at):
    def call(step, batch_size):
        if step == at:
            raise Interrupt
        return source(step, batch_size)

    return call


@pytest.mark.parametrize("source_kind", ["stream", "fixed"])
def test_resume_continues_exactly(tmp_path, source_kind):
    def source():
        if source_kind == "stream":
            return stream(seed=1)
        return FixedSource(matching.generate(100, seed=4).batch(), seed=2)  # several epochs

    c = cfg(steps=24, checkpoint_every=8, eval_every=4)
    straight = train(small_model(), source(), c, out_dir=tmp_path / "a").module
    with pytest.raises(Interrupt):
        train(small_model(), crashing(source(), at=19), c, out_dir=tmp_path / "b")
    assert read_state_info(tmp_path / "b" / "state.safetensors")["step"] == 16
    resumed = train(
        small_model(seed=99), source(), c, out_dir=tmp_path / "b"
    )  # other init: must be overwritten
    assert resumed.steps_done == 24
    for (name, p), q in zip(straight.named_parameters(), resumed.module.parameters()):
        assert torch.equal(p, q), name
    # a finished run resumes to a no-op
    again = train(small_model(seed=5), source(), c, out_dir=tmp_path / "b")
    assert all(torch.equal(p, q) for p, q in zip(straight.parameters(), again.module.parameters()))


def test_resume_refuses_a_different_config(tmp_path):
    train(small_model(), stream(), cfg(steps=5), out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"cannot resume .*\(lr: saved 0.003 vs now 0.001\)"):
        train(small_model(), stream(), cfg(steps=5, lr=1e-3), out_dir=tmp_path)
    train(small_model(), stream(), cfg(steps=5, lr=1e-3), out_dir=tmp_path, resume=False)


def test_divergence_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    calls = {"n": 0}

    def flaky_loss(model, batch):
        calls["n"] += 1
        logits = model(batch.inputs)[batch.mask]
        loss = torch.nn.functional.cross_entropy(logits, batch.targets[batch.mask])
        return loss * float("nan") if calls["n"] == 8 else loss

    with pytest.raises(
        TrainingDiverged, match=r"loss became nan at step 7.*last good checkpoint.*state.safetensors"
    ):
        train(small_model(), stream(), cfg(checkpoint_every=5), loss_fn=flaky_loss, out_dir=tmp_path)
    info = read_state_info(tmp_path / "state.safetensors")
    assert info["step"] == 5
    assert not (tmp_path / "model.safetensors").exists()


def test_fixed_source_covers_each_example_once_per_epoch():
    data = Batch(
        torch.arange(40).view(20, 2), torch.arange(40).view(20, 2), torch.ones(20, 2, dtype=torch.bool)
    )
    src = FixedSource(data, seed=0)
    epoch0 = torch.cat([src(s, 5).inputs[:, 0] for s in range(4)])
    epoch1 = torch.cat([src(s, 5).inputs[:, 0] for s in range(4, 8)])
    assert sorted(epoch0.tolist()) == list(range(0, 40, 2)) == sorted(epoch1.tolist())
    assert not torch.equal(epoch0, epoch1)
    assert torch.equal(FixedSource(data, seed=0)(6, 5).inputs, src(6, 5).inputs)
    with pytest.raises(ValueError, match="batch_size=30 is larger than the dataset"):
        src(0, 30)


def test_stop_when_ends_early(tmp_path):
    result = train(
        small_model(),
        stream(),
        cfg(steps=40),
        {"train": matching.generate(64).batch()},
        stop_when=lambda m: m.step.max() >= 10,
    )
    assert result.stopped_early and result.steps_done == 10


def test_bf16_autocast_runs():
    result = train(
        small_model(),
        stream(),
        cfg(steps=3, warmup_steps=1, bf16=True),
        {"train": matching.generate(32).batch()},
    )
    assert math.isfinite(result.final("train", "loss"))


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"steps": 0}, r"TrainConfig.steps must be a positive integer; got 0"),
        ({"lr": -1.0}, r"TrainConfig.lr must be a finite number >= 0; got -1.0"),
        ({"lr": 0.0}, r"TrainConfig.lr must be > 0"),
        ({"warmup_steps": 50, "steps": 10}, r"warmup_steps=50 exceeds steps=10"),
        ({"schedule": "step"}, r"schedule must be one of .*'step'"),
        ({"grad_clip": 0}, r"grad_clip must be > 0 or None; got 0"),
        ({"betas": (0.9, 1.0)}, r"betas must be two numbers in \[0, 1\)"),
        ({"device": "tpu"}, r"unknown device 'tpu'"),
    ],
)
def test_bad_train_config_is_named(kw, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when CUDA is missing")
def test_cuda_requested_without_cuda():
    with pytest.raises(ValueError, match="CUDA is not available"):
        TrainConfig(device="cuda")


def test_evaluate_lm_takes_a_logits_function():
    batch = matching.generate(n=64, split="test", seed=1).batch()
    model = Transformer(tiny_config(d_vocab=201, n_ctx=13))
    default = evaluate_lm(model, batch, batch_size=16)
    assert evaluate_lm(model, batch, 16, lambda m, b: m(b.inputs)) == default

    def oracle(m, b):  # the right token everywhere, by a margin
        return torch.nn.functional.one_hot(b.targets, 201).float() * 50

    perfect = evaluate_lm(model, batch, 16, oracle)
    assert perfect["accuracy"] == 1.0 and perfect["token_accuracy"] == 1.0
    assert perfect["loss"] < 1e-6 < default["loss"]


def _lr_log(result):
    m = result.metrics
    return m[(m.split == "train_batch") & (m.metric == "lr")].set_index("step").value


def test_reset_warmup_ramps_the_lr_after_each_optimizer_reset_and_resumes_exactly(tmp_path):
    def reset_at(s):
        return s in (3, 9)

    c = cfg(steps=12, warmup_steps=0, schedule="constant", eval_every=1, reset_warmup=4)
    full = train(small_model(), stream(), c, {}, reset_optimizer_at=reset_at)
    lr = _lr_log(full)
    assert lr[1] == lr[3] == pytest.approx(3e-3)  # before the first reset: the plain schedule
    assert [lr[s] / 3e-3 for s in (4, 5, 6, 7, 8)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert lr[10] / 3e-3 == pytest.approx(0.25)
    # interrupted inside the ramp (last checkpoint after step 5), resumed: the uninterrupted weights
    c_ckpt = cfg(**{**c.to_dict(), "checkpoint_every": 6})
    with pytest.raises(Interrupt):
        train(small_model(), crashing(stream(), 7), c_ckpt, {}, out_dir=tmp_path, reset_optimizer_at=reset_at)
    resumed = train(small_model(), stream(), c_ckpt, {}, out_dir=tmp_path, reset_optimizer_at=reset_at)
    for a, b in zip(full.module.state_dict().values(), resumed.module.state_dict().values()):
        assert torch.equal(a, b)


def test_reset_warmup_must_be_a_nonnegative_integer():
    with pytest.raises(ValueError, match="reset_warmup"):
        cfg(reset_warmup=-1)


def test_monitors_are_recorded_at_every_evaluation():
    calls = []

    def monitor(module):
        calls.append(module)
        return {"w_e_norm": float(module.W_E.detach().norm())}

    model = small_model()
    res = train(model, stream(), cfg(steps=6, eval_every=3), monitors={"weights": monitor})
    rows = res.metrics[res.metrics.split == "weights"]
    assert list(rows.step) == [0, 3, 6] and set(rows.metric) == {"w_e_norm"}
    assert rows.value.iloc[-1] == pytest.approx(float(model.W_E.detach().norm()))
    assert all(m is model for m in calls)


@pytest.mark.parametrize("decay_embeddings", [True, False])
def test_decay_embeddings_false_leaves_untrained_embedding_rows_alone(decay_embeddings):
    model = small_model()
    before = model.W_E.detach().clone()
    c = cfg(steps=3, lr=0.1, weight_decay=0.5, warmup_steps=0, schedule="constant", eval_every=3)
    train(model, stream(), dataclasses.replace(c, decay_embeddings=decay_embeddings))
    ood_rows = slice(101, 201)  # OOD tokens: never in a training input, so no gradient
    if decay_embeddings:  # AdamW decay alone: w <- w (1 - lr wd), three times
        torch.testing.assert_close(model.W_E[ood_rows], before[ood_rows] * 0.95**3)
    else:
        torch.testing.assert_close(model.W_E[ood_rows], before[ood_rows])
    assert not torch.equal(model.W_E[1:101], before[1:101])  # the trained rows did move


def test_states_saved_before_decay_embeddings_existed_still_resume():
    from reasonlens.training.trainer import _check_resumable

    saved = cfg().to_dict()
    saved.pop("decay_embeddings")
    _check_resumable(saved, cfg(), Path("state.safetensors"))  # the default: no error
    with pytest.raises(ValueError, match="decay_embeddings"):
        _check_resumable(saved, cfg(decay_embeddings=False), Path("state.safetensors"))
