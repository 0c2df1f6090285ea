"""Logit lens: it reads the model's own logits at the last depth, and its table is right."""

import math

import pytest
import torch

from reasonlens.analysis import lens_logits, logit_lens, matching_logit_lens
from reasonlens.analysis.lens import hop_targets
from reasonlens.models import ModelConfig, Transformer
from reasonlens.tasks import matching
from tests.conftest import tiny_config


def test_last_depth_equals_model_logits(model, tokens):
    lens = lens_logits(model, tokens, positions=list(range(tokens.shape[1])))
    assert lens.shape == (model.cfg.n_layers + 1, *tokens.shape, model.cfg.d_vocab)
    with torch.no_grad():
        logits = model(tokens)
    torch.testing.assert_close(lens[-1], logits, atol=1e-5, rtol=1e-5)
    # earlier depths are not the output (the blocks do something)
    assert not torch.allclose(lens[0], logits, atol=1e-3)


def test_pre_ln_reads_through_ln_final(tokens):
    model = Transformer(tiny_config(norm="pre"))
    with torch.no_grad():
        embed = model.W_E[tokens[:, -1]] + model.W_pos[tokens.shape[1] - 1]
        want = model.unembed(model.ln_final(embed[:, None]))[:, 0]
    torch.testing.assert_close(lens_logits(model, tokens)[0, :, 0], want, atol=1e-5, rtol=1e-5)


def constructed():
    """No norm, one attention-only block: depth 0 reads W_E[token] (W_U = I, no position, no
    bias), depth 1 adds the attention's output bias b_O = 5 e_3 (W_O = 0)."""
    cfg = ModelConfig(n_layers=1, d_model=4, n_ctx=2, d_vocab=4, d_mlp=0, norm="none", attn_bias=True)
    model = Transformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.W_E.copy_(torch.tensor([[3.0, 1, 2, 0], [0, 0, 0, 1], [1, 2, 0, 0], [0, 0, 0, 0]]))
        model.unembed.W_U.copy_(torch.eye(4))
        model.blocks[0].attn.b_O.copy_(torch.tensor([0.0, 0, 0, 5]))
    return model


def test_constructed_ranks_and_probabilities():
    model = constructed()
    tokens = torch.tensor([[1, 0], [1, 2]])  # last tokens 0 and 2: logits [3,1,2,0] and [1,2,0,0]
    answers = torch.tensor([2, 1])  # ranks 1 and 0 at depth 0
    extra = {"three": torch.tensor([3, 3]), "absent": torch.tensor([0, -1])}
    df = logit_lens(model, tokens, answers=answers, extra_targets=extra)
    assert len(df) == 2 * 1 * 3 and list(df.stream.unique()) == ["embed", "block 0"]
    row = df.set_index(["depth", "target"])

    def sm(logits, i):
        return math.exp(logits[i]) / sum(math.exp(v) for v in logits)

    a, b = [3, 1, 2, 0], [1, 2, 0, 0]
    assert row.loc[(0, "answer"), "mean_rank"] == pytest.approx(0.5)
    assert row.loc[(0, "answer"), "top1_acc"] == pytest.approx(0.5)
    assert row.loc[(0, "answer"), "mean_prob"] == pytest.approx((sm(a, 2) + sm(b, 1)) / 2)
    assert row.loc[(0, "answer"), "mean_logit"] == pytest.approx(2.0)
    assert row.loc[(0, "three"), "mean_rank"] == pytest.approx(2.5)  # 3 above it in a; 2 in b (ties)
    assert row.loc[(0, "absent"), "n_examples"] == 1 and row.loc[(0, "absent"), "mean_rank"] == 0
    # depth 1: b_O puts token 3 on top everywhere
    assert row.loc[(1, "three"), "top1_acc"] == 1 and row.loc[(1, "three"), "mean_rank"] == 0
    assert row.loc[(1, "answer"), "mean_rank"] == pytest.approx(1.5)
    want = (sm([3, 1, 2, 5], 3) + sm([1, 2, 0, 5], 3)) / 2
    assert row.loc[(1, "three"), "mean_prob"] == pytest.approx(want)


def test_without_targets_reports_the_final_prediction(tokens):
    model = Transformer(tiny_config(norm="post"))
    df = logit_lens(model, tokens, positions=[0, -1])
    assert set(df.target) == {"final"} and set(df.position) == {0, tokens.shape[1] - 1}
    last = df[df.depth == model.cfg.n_layers]
    assert (last.top1_acc == 1).all() and (last.mean_rank == 0).all()


def test_bad_input_is_named(tokens):
    model = Transformer(tiny_config())
    with pytest.raises(ValueError, match="position 9"):
        logit_lens(model, tokens, positions=[9])
    with pytest.raises(ValueError, match="target 'answer'"):
        logit_lens(model, tokens, answers=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="outside the model's 50 output tokens"):
        logit_lens(model, tokens, extra_targets={"x": torch.full((3,), 50)})
    with pytest.raises(ValueError, match="tokens must be"):
        logit_lens(model, tokens[0])


def test_matching_lens_names_hop_nodes():
    data = matching.generate(6, split="test", steps=[2, 3], seq_len=13, seed=3)
    targets = hop_targets(data)
    assert set(targets) == {"query", "hop 1", "hop 2"}
    for i in range(len(data)):
        k = int(data.steps[i])
        assert int(targets["query"][i]) == int(data.paths[i, 0])
        assert int(targets["hop 1"][i]) == int(data.paths[i, 1])
        assert int(targets["hop 2"][i]) == (int(data.paths[i, 2]) if k == 3 else -1)
    model = Transformer(ModelConfig(n_layers=2, d_model=16, n_ctx=13, d_vocab=201, norm="post"))
    df = matching_logit_lens(model, data)
    assert set(df.target) == {"answer", "query", "hop 1", "hop 2"} and set(df.position) == {12}
    assert df.set_index("target").loc["hop 2", "n_examples"].tolist() == [int((data.steps == 3).sum())] * 3
