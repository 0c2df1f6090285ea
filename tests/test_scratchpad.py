"""The scratchpad library: setup checks, the batch source, greedy grading with scripted models,
and the probes' layout, on tiny deterministic inputs."""

import numpy as np
import pytest
import torch
from torch import nn

from reasonlens import scratchpad as S
from reasonlens.models import ModelConfig, Transformer
from reasonlens.tasks import addition as ad
from reasonlens.tasks import polynomial as po
from reasonlens.tasks import scratch as sp


class Scripted(nn.Module):
    """A 'model' that knows the full sequences: at every position it predicts the next token of
    the sequence whose prompt the row starts with; ``wrong`` maps a size to an answer digit it
    gets wrong (digit + 1 mod 10)."""

    def __init__(self, data: sp.ScratchData, n_ctx: int, wrong: dict[int, int] | None = None):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.cfg = ModelConfig(n_layers=1, d_model=4, n_ctx=n_ctx, d_vocab=sp.D_VOCAB)
        self.rows = {}
        for i in range(len(data)):
            full = data.tokens[i, : int(data.length[i])].clone()
            size = int(data.size[i])
            if wrong and size in wrong:
                pos = int(data.answer_start[i]) + wrong[size]
                full[pos] = sp.DIGIT0 + (full[pos] - sp.DIGIT0 + 1) % 10
            self.rows[tuple(full[: int(data.prompt_len[i])].tolist())] = (int(data.prompt_len[i]), full)

    def forward(self, tokens):
        B, T = tokens.shape
        logits = torch.zeros(B, T, sp.D_VOCAB)
        for b in range(B):
            for plen in {p for p, _ in self.rows.values()}:
                key = tuple(tokens[b, :plen].tolist())
                if key in self.rows:
                    full = self.rows[key][1]
                    nxt = torch.full((T,), sp.PAD)
                    k = min(T, len(full) - 1)
                    nxt[:k] = full[1 : k + 1]
                    logits[b, torch.arange(T), nxt] = 1.0
        return logits


@pytest.mark.parametrize("mode", sp.MODES)
def test_evaluate_grades_the_final_answer_per_size(mode):
    data = sp.concat([ad.sample(6, [k], mode, seed=k).seq for k in (1, 3, 4)])
    right = S.evaluate(Scripted(data, data.max_len), data, batch_size=4)
    assert (
        right.digits.tolist() == [1, 3, 4] and (right.accuracy == 1).all() and (right.n_examples == 6).all()
    )
    assert (right.answer_digit_accuracy == 1).all()
    wrong = S.evaluate(Scripted(data, data.max_len, wrong={3: 1}), data, batch_size=4)
    assert wrong.set_index("digits").accuracy.to_dict() == {1: 1.0, 3: 0.0, 4: 1.0}
    assert wrong.set_index("digits").answer_digit_accuracy[3] == pytest.approx(3 / 4)  # 1 of 4 digits wrong
    if mode == "scratchpad":
        assert (wrong.scratch_accuracy == 1).all()  # only the answer was changed
    else:
        assert wrong.scratch_accuracy.isna().all()


def test_evaluate_refuses_a_short_context():
    data = ad.sample(3, [5], "scratchpad").seq
    with pytest.raises(ValueError, match="n_ctx"):
        S.evaluate(Scripted(data, data.max_len - 1), data)


def test_answer_of():
    digits = sp.encode("2 3 1")
    assert S.answer_of([*digits, sp.END, sp.PAD], "direct") == digits
    assert S.answer_of([sp.OPEN, 5, sp.LINE, sp.CLOSE, *digits, sp.END], "scratchpad") == digits
    assert S.answer_of([sp.OPEN, 5, sp.LINE, *digits, sp.END], "scratchpad") is None  # no </scratch>
    assert S.answer_of(digits, "direct") is None  # no <end>


def test_train_source_is_a_pure_function_of_the_step_and_fits_the_context():
    setup = S.preset("quick", "addition")
    src = S.train_source(setup, "scratchpad", seed=1)
    a, b = src(7, 16), S.train_source(setup, "scratchpad", seed=1)(7, 16)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.mask, b.mask)
    assert not torch.equal(src(8, 16).inputs, a.inputs)
    longest = setup.longest("scratchpad")  # the 10-digit scratchpad
    assert a.inputs.shape[1] == longest - 1 == setup.n_ctx - 1
    assert (a.extra["offset"] > 0).any()  # shifted right by random offsets
    assert (a.extra["offset"] + a.extra["length"] <= longest).all()
    # the last input row of the longest test sequence is trained: some example reaches it
    reach = [int((b.extra["offset"] + b.extra["length"]).max()) - 2 for b in (src(k, 16) for k in range(40))]
    assert max(reach) == longest - 2
    direct = S.train_source(setup, "direct", seed=1)(7, 16)
    assert direct.inputs.shape[1] == setup.longest("direct") - 1 < setup.n_ctx - 1
    fixed = S.train_source(setup.replace(random_offset=False), "scratchpad", seed=1)(7, 16)
    assert (fixed.extra["offset"] == 0).all()
    assert int(fixed.mask.sum()) == int(a.mask.sum())  # same examples, same written tokens


def test_setup_checks_name_the_bad_value():
    with pytest.raises(ValueError, match="'mult'"):
        S.ScratchpadSetup(task="mult")
    with pytest.raises(ValueError, match="steps"):
        S.ScratchpadSetup(steps=0)
    with pytest.raises(ValueError, match="train_sizes"):
        S.ScratchpadSetup(train_sizes=(0, 1))
    with pytest.raises(ValueError, match="probe_size"):
        S.ScratchpadSetup(probe_size=12)
    with pytest.raises(ValueError, match="modulus"):
        S.ScratchpadSetup(task="polynomial", modulus=7)
    with pytest.raises(ValueError, match="preset"):
        S.preset("paper")


def test_model_context_covers_the_longest_test_example():
    for task in S.TASKS:
        setup = S.preset("cpu", task)
        longest = setup.make(1, [max(setup.test_sizes)], "scratchpad", 0).seq.max_len
        assert setup.model_config(0).n_ctx == setup.n_ctx == longest


def _tiny_model(n_ctx):
    return Transformer(
        ModelConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=32, n_ctx=n_ctx, d_vocab=sp.D_VOCAB)
    )


def test_carry_probes_layout_and_the_final_carry_in_the_embeddings():
    data = ad.sample(200, [4], "direct", seed=0)
    table = S.probe_intermediates(_tiny_model(data.seq.max_len), data)
    assert set(table.depth) == {0, 1, 2}
    assert set(table.target) == {"carry1", "carry2", "carry3", "carry4"}
    assert set(table.position) == set(range(data.seq.max_len - 1))
    labels = S.position_labels(data.seq)
    assert labels == [
        "a0",
        "a1",
        "a2",
        "a3",
        "+",
        "b0",
        "b1",
        "b2",
        "b3",
        "=",
        "ans0",
        "ans1",
        "ans2",
        "ans3",
        "ans4",
    ]
    row = table[(table.target == "carry2") & (table.position == 11) & (table.depth == 0)].iloc[0]
    assert row.token == "ans1" and row.predicts_answer_digit == 2 and row.column == 2
    # the last input token is the answer's last digit, which is the final carry: the embeddings
    # alone decode it exactly there, even in an untrained model; the shuffled control does not
    last = table[(table.target == "carry4") & (table.position == 14) & (table.depth == 0)].iloc[0]
    assert last.score == 1.0 and last.control_score < 0.9


def test_sum_probes_for_polynomials_and_refusals():
    data = po.sample(150, [3], "direct", seed=0)
    table = S.probe_intermediates(_tiny_model(data.seq.max_len), data)
    assert set(table.target) == {"sum0", "sum1", "sum2"}
    assert S.position_labels(data.seq) == ["c0", "c1", "c2", "@", "x", "=", "ans0"]
    last = table[(table.target == "sum2") & (table.position == 6) & (table.depth == 0)].iloc[0]
    assert last.score == 1.0  # the answer read there is the last running sum
    with pytest.raises(ValueError, match="one size"):
        S.probe_intermediates(_tiny_model(40), ad.sample(100, [3, 4], "direct"))
    with pytest.raises(ValueError, match="direct"):
        S.probe_intermediates(_tiny_model(60), ad.sample(100, [3], "scratchpad"))


def test_train_model_runs_and_learns_something_on_the_quick_preset(tmp_path):
    setup = S.preset("quick", "addition").replace(progress=False, device="cpu")
    model, res = S.train_model(setup, "direct", 0, tmp_path / "run")
    assert res.steps_done == setup.steps and (tmp_path / "run" / "model.safetensors").exists()
    loss = res.metrics[(res.metrics.split == "valid") & (res.metrics.metric == "loss")].value
    assert loss.iloc[-1] < loss.iloc[0]
    again, res2 = S.train_model(setup, "direct", 0, tmp_path / "run")  # reused, not retrained
    assert res2.steps_done == setup.steps
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p.cpu(), q.cpu())
    assert np.isfinite(res.wall_time)
