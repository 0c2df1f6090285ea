"""Stepwise internalization: the removal schedule, smoothing, token removal, and the stage."""

import math

import pytest
import torch

from reasonlens.icot import (
    InternalizationSource,
    RemovalSchedule,
    final_format,
    generate_answers,
    remove_cot_tokens,
    smoothing_offsets,
    smoothing_probabilities,
    train_internalized,
)
from reasonlens.models import Transformer
from reasonlens.tasks import multiplication as M
from reasonlens.training import TrainConfig
from reasonlens.training.checkpoint import read_safetensors
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def splits():
    return M.make_splits((2, 2), n_train=64, n_valid=8, n_test=8, seed=0)


def test_schedule_counts_removed_tokens_by_step():
    s = RemovalSchedule((3, 2, 1))
    assert s.boundaries == (3, 5, 6) and s.end == 6 and s.n_tokens == 3
    assert [s.removed_at(t) for t in range(9)] == [0, 0, 0, 1, 1, 2, 3, 3, 3]
    assert [t for t in range(9) if s.is_removal_step(t)] == [3, 5, 6]
    assert RemovalSchedule.linear(4, 5, warmup=2).dwell == (2, 5, 5, 5)
    ramp = RemovalSchedule.ramp(5, first=10, last=80, warmup=7)
    assert ramp.dwell == (7, 10, 20, 40, 80)  # geometric from first to last
    with pytest.raises(ValueError, match="positive integers"):
        RemovalSchedule((3, 0))
    with pytest.raises(ValueError, match="steps_per_token must be a positive integer; got 0"):
        RemovalSchedule.linear(4, 0)


def test_smoothing_distribution_has_the_exponential_mean():
    lam, k = 1.0, 6
    p = smoothing_probabilities(lam, k)
    assert torch.isclose(p.sum(), torch.tensor(1.0, dtype=p.dtype))
    assert torch.allclose(p[1:] / p[:-1], torch.full((k,), math.exp(-lam), dtype=p.dtype))
    mean = float((torch.arange(k + 1) * p).sum())
    draws = smoothing_offsets(40_000, lam, k, torch.Generator().manual_seed(0))
    assert draws.min() >= 0 and draws.max() <= k
    assert abs(draws.float().mean().item() - mean) < 0.02
    assert (smoothing_offsets(50, math.inf, k) == 0).all() and (smoothing_offsets(50, lam, 0) == 0).all()
    with pytest.raises(ValueError, match="lambda must be a finite number >= 0; got -1"):
        smoothing_probabilities(-1, 3)


def test_removing_tokens_cuts_the_cot_from_the_left_and_keeps_the_second_separator(splits):
    data = splits["train"][:4]
    batch = data.batch("cot")
    sep1, sep2 = batch.extra["sep"], batch.extra["sep2"]
    full = torch.cat([batch.inputs[:, :1], batch.targets], dim=1)
    r = torch.tensor([0, 2, 1000, 3])
    out = remove_cot_tokens(batch, r)
    seq = torch.cat([out.inputs[:, :1], out.targets], dim=1)
    for i in range(4):
        n_cot = int(sep2[i] - sep1[i] - 1)
        cut = min(int(r[i]), n_cot)
        s1, n = int(sep1[i]), int(batch.extra["length"][i])
        expected = torch.cat([full[i, : s1 + 1], full[i, s1 + 1 + cut : n]])
        assert seq[i, : len(expected)].tolist() == expected.tolist()
        assert (seq[i, len(expected) :] == M.PAD).all()
        assert int(out.extra["length"][i]) == len(expected) and int(out.extra["removed"][i]) == cut
        assert int(out.extra["sep2"][i]) == int(sep2[i]) - cut
        assert seq[i, int(out.extra["sep2"][i])] == M.SEP
        # the loss: every position predicting a token after the first separator
        assert out.mask[i].nonzero().squeeze(1).tolist() == list(range(s1, len(expected) - 1))
    fin = final_format(data)
    for i in range(4):
        s1 = int(data.sep1[i])
        tokens = torch.cat([fin.inputs[i, :1], fin.targets[i]]).tolist()
        assert tokens[s1 : s1 + 3] == [M.SEP, M.SEP, M.ANSWER]
        assert M.decode(tokens[s1 + 3 : s1 + 3 + len(data.answer_tokens(i))]) == M.decode(
            data.answer_tokens(i)
        )


def test_source_follows_the_schedule_and_is_a_pure_function_of_the_step(splits):
    n_cot = M.cot_length(2, 2)
    sched = RemovalSchedule.linear(n_cot, 2, warmup=2)
    src = InternalizationSource(splits["train"], sched, lam=math.inf, seed=1)
    for step in (0, 1, 2, 5, sched.end, sched.end + 3):
        b = src(step, 8)
        assert (b.extra["removed"] == min(sched.removed_at(step), n_cot)).all()
        assert torch.equal(b.inputs, src(step, 8).inputs)
    smoothed = InternalizationSource(splits["train"], sched, lam=0.0, seed=1)  # lambda 0: uniform
    assert (smoothed(2, 64).extra["removed"] > 1).any()
    with pytest.raises(ValueError, match="removes 3 tokens but the chain of thought has up to"):
        InternalizationSource(splits["train"], RemovalSchedule((1, 1, 1)))


def _adam_steps(state_file):
    tensors, _ = read_safetensors(state_file)
    return {int(v.item()) for k, v in tensors.items() if k.endswith(".step")}


def test_the_optimizer_is_reset_exactly_at_each_removal(splits, tmp_path):
    n_cot = M.cot_length(2, 2)
    sched = RemovalSchedule.linear(n_cot, 2, warmup=3)
    cfg_kw = dict(batch_size=8, lr=1e-3, eval_every=100, progress=False, schedule="constant")
    mcfg = tiny_config(d_vocab=M.D_VOCAB, n_ctx=splits["train"].max_len, d_model=16, d_head=8, d_mlp=32)
    for steps in (sched.boundaries[1] + 1, sched.end + 4):
        model = Transformer(mcfg)
        out = tmp_path / f"run{steps}"
        train_internalized(model, splits, TrainConfig(steps=steps, **cfg_kw), sched, 4.0, out)
        last_reset = max(b for b in sched.boundaries if b < steps)
        assert _adam_steps(out / "state.safetensors") == {steps - last_reset}


class Interrupt(Exception):
    pass


def test_internalized_stage_resumes_bit_identically_and_decodes_with_two_separators(
    splits, tmp_path, monkeypatch
):
    import reasonlens.icot.stages as stages

    n_cot = M.cot_length(2, 2)
    sched = RemovalSchedule.linear(n_cot, 1, warmup=2)
    mkw = dict(d_vocab=M.D_VOCAB, n_ctx=splits["train"].max_len, d_model=16, d_head=8, d_mlp=32)
    mcfg = tiny_config(**mkw)
    cfg = TrainConfig(steps=sched.end + 6, batch_size=8, lr=1e-3, eval_every=4, checkpoint_every=4,
                      progress=False, schedule="constant")  # fmt: skip
    straight = Transformer(mcfg)
    res = train_internalized(straight, splits, cfg, sched, 4.0, tmp_path / "a")
    assert "accuracy" in set(res.metrics.metric)

    crash_at = sched.end + 2  # after the last removal, past a checkpoint

    class Crashing(InternalizationSource):
        def __call__(self, step, batch_size):
            if step == crash_at:
                raise Interrupt
            return super().__call__(step, batch_size)

    monkeypatch.setattr(stages, "InternalizationSource", Crashing)
    with pytest.raises(Interrupt):
        train_internalized(Transformer(mcfg), splits, cfg, sched, 4.0, tmp_path / "b")
    monkeypatch.undo()
    resumed = Transformer(tiny_config(**mkw, seed=7))  # overwritten by the checkpoint
    train_internalized(resumed, splits, cfg, sched, 4.0, tmp_path / "b")
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_internalized_decoding_is_given_the_second_separator(splits, monkeypatch):
    import reasonlens.icot.evaluate as evaluate

    seen = {}
    real = evaluate.greedy_decode

    def spy(forward, prompts, lengths, *args, **kwargs):
        seen["prompts"], seen["lengths"] = prompts, lengths
        return real(forward, prompts, lengths, *args, **kwargs)

    monkeypatch.setattr(evaluate, "greedy_decode", spy)
    data = splits["test"]
    model = Transformer(tiny_config(d_vocab=M.D_VOCAB, n_ctx=data.max_len, d_model=16, d_head=8, d_mlp=32))
    gen = generate_answers("internalized", model, data)
    assert gen.n_examples == len(data) and 0 <= gen.accuracy <= 1
    prompts, lengths = seen["prompts"], seen["lengths"]
    plain, plain_len = data.prompts()
    assert torch.equal(lengths, plain_len + 1)
    for i in range(len(data)):
        n = int(lengths[i])
        assert prompts[i, : n - 1].tolist() == plain[i, : n - 1].tolist()
        assert prompts[i, n - 2 : n].tolist() == [M.SEP, M.SEP]
