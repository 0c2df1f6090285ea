"""Attention knockout: removing nothing changes nothing, removing everything changes the answer,
renormalised rows sum to 1, and the ranking finds the one edge a constructed model copies through."""

import pytest
import torch

from reasonlens.analysis import attention_knockout, rank_edges
from reasonlens.analysis.knockout import edge_masks, knock_out
from reasonlens.models import ModelConfig, Transformer
from tests.conftest import tiny_config


@pytest.mark.parametrize("mode", ["zero", "renormalize"])
def test_edge_with_zero_attention_changes_nothing(model, tokens, mode):
    answers = tokens[:, 0]
    # key after query: masked by causality, so its weight is exactly 0; the API refuses it, so
    # knock out a real edge whose weight we first set to 0 in every run
    pos = tokens.shape[1]

    def no_first(pattern, hook):
        pattern = pattern.clone()
        pattern[:, :, pos - 1, 0] = 0.0
        return pattern / pattern.sum(-1, keepdim=True)

    for layer in range(model.cfg.n_layers):
        model.blocks[layer].attn.hook_pattern.add_hook(no_first, is_permanent=True)
    try:
        df = attention_knockout(model, tokens, [(0, 0, -1, 0), (1, None, -1, 0)], answers, mode=mode)
    finally:
        model.reset_hooks(including_permanent=True)
    assert df.effect.item() == pytest.approx(0.0, abs=1e-5)
    assert df.n_edges.item() == 2 and df.metric.item() == "logit"


@pytest.mark.parametrize("mode", ["zero", "renormalize"])
def test_knocking_out_every_edge_from_the_answer_position_changes_the_logits(model, tokens, mode):
    answers, counter = tokens[:, 0], tokens[:, 1]
    pos = tokens.shape[1]
    edges = [(layer, None, pos - 1, k) for layer in range(model.cfg.n_layers) for k in range(pos)]
    df = attention_knockout(model, tokens, edges, answers, counter=counter, mode=mode)
    assert df.metric.item() == "logit_diff"
    assert abs(df.effect.item()) > 1e-3
    with torch.no_grad():
        clean = model(tokens)
    ar = torch.arange(len(tokens))
    want = (clean[ar, -1, answers] - clean[ar, -1, counter]).mean().item()
    assert df.clean.item() == pytest.approx(want, abs=1e-4)


def test_renormalize_keeps_rows_summing_to_one(tokens):
    """The knocked pattern, recorded by a hook after the knockout's, has rows summing to 1 and the
    edges at 0; attention_knockout reports exactly that run."""
    model = Transformer(tiny_config(norm="pre"))
    edges = [(1, 0, 5, 0), (1, 0, 5, 3), (1, 1, 8, 8)]
    mask = edge_masks(edges, model.cfg.n_heads, tokens.shape[1])[1]
    seen = []
    name = "blocks.1.attn.hook_pattern"
    hooks = [
        (name, lambda p, hook: knock_out(p, mask, "renormalize")),
        (name, lambda p, hook: seen.append(p)),
    ]
    with torch.no_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    knocked = seen[-1]
    torch.testing.assert_close(knocked.sum(-1), torch.ones(knocked.shape[:-1]))
    assert (knocked[:, 0, 5, [0, 3]] == 0).all() and (knocked[:, 1, 8, 8] == 0).all()
    assert (knocked[:, 1, 5, 0] > 0).all()  # the other head keeps its edge
    df = attention_knockout(model, tokens, edges, tokens[:, 0], mode="renormalize")
    want = logits[torch.arange(len(tokens)), -1, tokens[:, 0]].mean().item()
    assert df.knocked.item() == pytest.approx(want, abs=1e-6)


def copier(n_vocab=6, n_ctx=5, source=2):
    """One attention head, no norm, attention only: every query reads key position ``source``
    (score 10 there, 0 elsewhere) and copies that token's one-hot into the unembedding."""
    d = n_vocab + n_ctx
    cfg = ModelConfig(n_layers=1, d_model=d, d_head=d, n_ctx=n_ctx, d_vocab=n_vocab, d_mlp=0, norm="none")
    model = Transformer(cfg)
    attn = model.blocks[0].attn
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.W_E[:, :n_vocab] = torch.eye(n_vocab)
        model.pos_embed.W_pos[:, n_vocab:] = torch.eye(n_ctx)
        attn.W_Q[0, n_vocab:, 0] = 1.0  # every position queries with 1
        attn.W_K[0, n_vocab + source, 0] = 10.0 * attn.attn_scale
        attn.W_V[0, :n_vocab, :n_vocab] = torch.eye(n_vocab)
        attn.W_O[0, :n_vocab, :n_vocab] = torch.eye(n_vocab)
        model.unembed.W_U[:n_vocab] = torch.eye(n_vocab)
    return model


@pytest.mark.parametrize("mode", ["zero", "renormalize"])
def test_top_edge_is_the_copied_one(mode):
    model = copier()
    tokens = torch.tensor([[0, 1, 2, 3, 4], [5, 4, 3, 2, 1], [1, 0, 5, 4, 3]])
    answers = tokens[:, 2]
    df = rank_edges(model, tokens, answers, mode=mode)
    assert len(df) == 5 and list(df["rank"]) == list(range(5))
    top = df.iloc[0]
    assert (top["layer"], top["head"], top["query_position"], top["key_position"]) == (0, 0, 4, 2)
    assert top.effect > 0.9 and top.attention > 0.99
    assert df.effect.is_monotonic_decreasing
    assert df.effect.iloc[1:].abs().max() < 1e-2
    # every query position, one layer
    all_q = rank_edges(model, tokens, answers, layers=[0], query_positions=[3, 4], mode=mode)
    assert len(all_q) == 4 + 5 and set(all_q.query_position) == {3, 4}


def test_bad_edges_are_named(tokens):
    model = Transformer(tiny_config())
    with pytest.raises(ValueError, match="layer 2"):
        attention_knockout(model, tokens, [(2, 0, 8, 0)], tokens[:, 0])
    with pytest.raises(ValueError, match="after query position"):
        attention_knockout(model, tokens, [(0, 0, 3, 5)], tokens[:, 0])
    with pytest.raises(ValueError, match="mode must be one of"):
        attention_knockout(model, tokens, [(0, 0, 3, 1)], tokens[:, 0], mode="mean")
    with pytest.raises(ValueError, match="counter must be tokens"):
        rank_edges(model, tokens, tokens[:, 0], counter=torch.full((3,), -1))
