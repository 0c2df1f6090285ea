"""Activation patching and the matching counterfactuals."""

import pytest
import torch

from reasonlens.analysis import activation_patching, matching_counterfactual, with_hop_layout
from reasonlens.models import ModelConfig, Transformer
from reasonlens.tasks import matching
from tests.tasks.test_matching import RESIDUES, follow, parse


@pytest.fixture(scope="module")
def data():
    return matching.generate(40, split="test", seed=21)


def model3(norm="post"):
    return Transformer(
        ModelConfig(n_layers=3, d_model=16, d_mlp=32, n_ctx=13, d_vocab=201, norm=norm, seed=2)
    )


def test_child_counterfactual_changes_only_the_answer_pair(data):
    corrupt, answers = matching_counterfactual(data, "child", seed=1)
    for i in range(len(data)):
        diff = torch.nonzero(corrupt[i] != data.inputs[i]).flatten().tolist()
        k = int(data.steps[i])
        assert diff == [2 * int(data.hop_pairs[i, k - 1]) + 1]
        assert int(answers[i]) not in data.tokens[i].tolist()
        pairs, query, _, _ = parse(torch.cat([corrupt[i], answers[i : i + 1]]), data.kind, data.seq_len)
        assert follow(pairs, query, k)[-1] == int(answers[i])
        assert {(c - p) % 5 for p, c in pairs} <= RESIDUES["test"]


def test_query_counterfactual_asks_another_node(data):
    corrupt, answers = matching_counterfactual(data, "query", seed=1)
    for i in range(len(data)):
        diff = torch.nonzero(corrupt[i] != data.inputs[i]).flatten().tolist()
        assert diff == [data.query_pos]
        pairs, query, _, _ = parse(torch.cat([corrupt[i], answers[i : i + 1]]), data.kind, data.seq_len)
        assert follow(pairs, query, int(data.steps[i]))[-1] == int(answers[i]) != int(data.answers[i])
    with pytest.raises(ValueError, match="counterfactual kind must be one of"):
        matching_counterfactual(data, "parent")


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_patching_restores_exactly_where_it_must(data, norm):
    """Denoising: patching the clean stream at the changed position before block 0 restores the
    clean run completely (score 1); positions before the change are identical in both runs
    (score 0); the last position's final residual stream alone decides the logits (score 1).
    Noising is the mirror image."""
    model = model3(norm)
    layout = with_hop_layout(data, data.hop_pairs[0].tolist())  # the changed child sits at one position
    c, a = matching_counterfactual(layout, "child", seed=0)
    changed = 2 * int(layout.hop_pairs[0, 1]) + 1
    for direction, full, none in (("denoise", 1.0, 0.0), ("noise", 0.0, 1.0)):
        df = activation_patching(model, layout.inputs, c, layout.answers, a, direction=direction)
        assert len(df) == 4 * data.seq_len and set(df.layer) == {0, 1, 2}
        score = df.set_index(["hook", "position"]).score
        assert score["blocks.0.hook_resid_pre", changed] == pytest.approx(full, abs=1e-6)
        assert score["blocks.2.hook_resid_post", data.seq_len - 1] == pytest.approx(full, abs=1e-6)
        for pos in range(changed):
            assert score["blocks.0.hook_resid_pre", pos] == pytest.approx(none, abs=1e-6)
        assert (df.clean_logit_diff != df.corrupt_logit_diff).all()


def test_patching_checks_its_input(data):
    model = model3()
    with pytest.raises(ValueError, match="same logit difference"):
        activation_patching(model, data.inputs, data.inputs, data.answers, data.answers)
    assert model.training  # the error inside the evaluation-mode block gave the mode back


def test_patching_runs_a_model_in_training_mode_and_gives_the_mode_back(data):
    """TransformerLens 4's patching refuses a model in training mode; ours switches to eval mode
    for the sweep and restores every module's mode, also a partly frozen model's."""
    model = model3()
    model.blocks[1].eval()  # a mixed state, e.g. a frozen block during fine-tuning
    before = {name: m.training for name, m in model.named_modules()}
    c, a = matching_counterfactual(data, "child", seed=0)
    df = activation_patching(model, data.inputs, c, data.answers, a)
    assert len(df) == 4 * data.seq_len
    assert {name: m.training for name, m in model.named_modules()} == before
    assert model.training and not model.blocks[1].training
    with pytest.raises(ValueError, match="direction must be one of"):
        activation_patching(model, data.inputs, data.inputs, data.answers, data.answers, direction="x")
    with pytest.raises(ValueError, match="must both be"):
        activation_patching(model, data.inputs, data.inputs[:, :5], data.answers, data.answers)


def test_hop_layout_selects_consistent_examples():
    data = matching.generate(600, split="test", seed=4)
    sub = with_hop_layout(data, [2, 0])
    assert len(sub) > 0 and (sub.hop_pairs[:, 0] == 2).all() and (sub.hop_pairs[:, 1] == 0).all()
    with pytest.raises(ValueError, match="distinct pair indices"):
        with_hop_layout(data, [1, 1])
