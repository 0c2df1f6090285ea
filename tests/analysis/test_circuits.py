"""The QK/OV matching matrix on hand-built weights, and the LayerNorm path it assumes."""

import math

import pytest
import torch

from reasonlens.analysis import (
    carry,
    diagonal_dominance,
    matching_matrix,
    matching_matrix_tensor,
    matching_matrix_variants,
    matching_scores,
    stream_matching_matrix,
    stream_matching_matrix_tensor,
    stream_queries,
)
from reasonlens.models import ModelConfig, Transformer
from reasonlens.tasks import matching

V = 11  # a matching vocabulary with n_tokens = 5: in-distribution tokens 1..5


def hand_built(norm, ov_perm=None, d_mlp=0):
    """One-hot embeddings, W_Q = W_K = W_V = identity, W_O = identity or a permutation."""
    cfg = ModelConfig(n_layers=3, d_model=V, d_head=V, n_heads=1, d_mlp=d_mlp, n_ctx=4, d_vocab=V, norm=norm)
    model = Transformer(cfg)
    eye = torch.eye(V)
    with torch.no_grad():
        model.embed.W_E.copy_(eye)
        for block in model.blocks:
            for name in ("W_Q", "W_K", "W_V"):
                getattr(block.attn, name).copy_(eye[None])
            block.attn.W_O.copy_(eye[None] if ov_perm is None else eye[ov_perm][None])
    return model


@pytest.mark.parametrize("norm", ["none", "pre", "post"])
def test_hand_built_matching_weights_give_a_diagonal_matrix(norm):
    model = hand_built(norm)
    for layer in (1, 2):
        M = matching_matrix_tensor(model, layer)[0]
        assert M.shape == (5, 5)
        off = M[~torch.eye(5, dtype=torch.bool)]
        assert torch.allclose(off, off[0].expand_as(off), atol=1e-5)  # one value off the diagonal
        assert (M.diagonal() > off.max() + 1e-3).all()
        assert diagonal_dominance(M)["diag_argmax_frac"] == 1.0
        if norm == "none":  # E W_QK (E W_OV)^T = I / sqrt(d_head) exactly
            torch.testing.assert_close(M, torch.eye(5) / math.sqrt(V))
            assert diagonal_dominance(M)["diag_zscore"] == pytest.approx(2.0)  # (1 - 1/5) / 0.4


def test_a_permuted_ov_circuit_is_off_the_diagonal():
    perm = [0, 2, 3, 4, 5, 1, 6, 7, 8, 9, 10]  # token s is copied as token perm^-1(s): a 5-cycle
    model = hand_built("none", ov_perm=perm)
    M = matching_matrix_tensor(model, 1)[0]
    scores = diagonal_dominance(M)
    assert scores["diag_argmax_frac"] == 0.0 and scores["diag_zscore"] < 0


def test_tidy_matrix_and_scores():
    model = hand_built("post", d_mlp=8)
    df = matching_matrix(model, tokens=[1, 2, 3, 4])
    assert list(df.columns) == ["layer", "head", "query_token", "key_token", "value"]
    assert len(df) == 2 * 4 * 4 and set(df.layer) == {1, 2}
    one = df[(df.layer == 2) & (df.query_token == 3) & (df.key_token == 1)].value.item()
    assert one == pytest.approx(float(matching_matrix_tensor(model, 2, [1, 2, 3, 4])[0, 2, 0]))
    scores = matching_scores(df)
    assert list(scores.layer) == [1, 2] and (scores.chance == 0.25).all() and (scores.n_tokens == 4).all()
    with pytest.raises(ValueError, match="layer must be in 1..2"):
        matching_matrix_tensor(model, 0)
    with pytest.raises(ValueError, match="tokens must be"):
        matching_matrix_tensor(model, 1, [V])


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_carry_follows_the_models_layernorms(norm):
    """With every attention and MLP output zeroed and no position embedding, the residual stream is
    the token embedding carried through the LayerNorms, which is what ``carry`` computes."""
    cfg = ModelConfig(n_layers=3, d_model=16, d_mlp=32, n_ctx=5, d_vocab=V, norm=norm, seed=1)
    model = Transformer(cfg)
    with torch.no_grad():
        model.pos_embed.W_pos.zero_()
        for block in model.blocks:
            block.attn.W_O.zero_()
            block.mlp.W_out.zero_()
            for ln in (block.ln1, block.ln2):  # non-trivial gains and biases
                ln.w.copy_(1 + 0.3 * torch.randn(16))
                ln.b.copy_(0.2 * torch.randn(16))
    tokens = torch.tensor([[1, 2, 3, 4, 5]])
    _, cache = model.run_with_cache(tokens)
    E = model.W_E[tokens[0]]
    for layer in range(3):
        if norm == "post":  # attention reads the residual stream itself
            seen = cache[f"blocks.{layer}.hook_resid_pre"][0]
        else:  # attention reads LN1 of it
            ln = model.blocks[layer].ln1
            seen = cache[f"blocks.{layer}.ln1.hook_normalized"][0] * ln.w + ln.b
        torch.testing.assert_close(carry(model, E, 0, layer), seen, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("noise, alpha", [("fixed", 0.8), ("learned", 0.3), ("identity", 0.5)])
def test_matching_matrix_uses_the_effective_matrices_with_noise(noise, alpha):
    """Without normalisation or biases, M(l) = E W_QK(l) (E W_OV(l-1))^T / sqrt(d_head), with the
    effective (noise-including) matrices that model.QK and model.OV report."""
    cfg = ModelConfig(n_layers=3, d_model=16, d_head=8, d_mlp=0, n_ctx=4, d_vocab=V, norm="none", seed=2,
                      noise=noise, noise_alpha=alpha)  # fmt: skip
    model = Transformer(cfg)
    tokens = [1, 2, 3, 4, 5]
    E = model.W_E[tokens]
    for layer in (1, 2):
        want = E @ model.QK.AB[layer, 0] @ (E @ model.OV.AB[layer - 1, 0]).T / math.sqrt(8)
        torch.testing.assert_close(matching_matrix_tensor(model, layer)[0], want, atol=1e-5, rtol=1e-4)
    # identity noise on zeroed weights: E a I (E a I)^T / sqrt(d_head), diagonal for one-hot E
    if noise == "identity":
        hand = hand_built("none")
        hand_noisy = Transformer(hand.cfg.replace(noise="identity", noise_alpha=alpha))
        hand_noisy.load_state_dict(hand.state_dict())
        with torch.no_grad():
            for block in hand_noisy.blocks:
                for name in ("W_Q", "W_K", "W_V", "W_O"):
                    getattr(block.attn, name).zero_()
        M = matching_matrix_tensor(hand_noisy, 1)[0]
        torch.testing.assert_close(M, alpha**2 * torch.eye(5) / math.sqrt(V))


# -- the query each layer actually reads ---------------------------------------------------------


NT = 20  # n_tokens of the stream tests: ID 1..20, OOD 21..40
VS = 2 * NT + 1


def subspace_model():
    """No norm, attention only, d_model = 2 * VS: tokens one-hot in subspace A (first VS dims),
    positions random in subspace B. Every layer's OV copies A into B; layers 1 and 2 query with
    A and key on B. So layer 1 matches its query token exactly, and nothing writes the hop-1 node
    into A at the query: layer 2 still queries with the original query token."""
    d = 2 * VS
    cfg = ModelConfig(n_layers=3, d_model=d, d_head=VS, n_heads=1, d_mlp=0, n_ctx=7, d_vocab=VS, norm="none")
    model = Transformer(cfg)
    eye = torch.eye(VS)
    A, B = slice(0, VS), slice(VS, d)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.embed.W_E.zero_()
        model.embed.W_E[:, A] = eye
        model.pos_embed.W_pos.zero_()
        model.pos_embed.W_pos[:, B] = 0.1 * torch.randn(7, VS, generator=gen)
        for layer, block in enumerate(model.blocks):
            attn = block.attn
            for name in ("W_Q", "W_K", "W_V", "W_O"):
                getattr(attn, name).zero_()
            attn.W_V[0, A] = eye
            attn.W_O[0, :, B] = eye
            attn.W_Q[0, A] = eye
            attn.W_K[0, A if layer == 0 else B] = eye
    return model


def test_layer_one_stream_query_gives_the_expected_diagonal():
    model = subspace_model()
    data = matching.generate(400, "test", steps=2, seq_len=7, seed=0, n_tokens=NT)
    M, tokens = stream_matching_matrix_tensor(model, data, 1, key_positions=False)
    assert tokens == sorted(set(data.paths[:, 0].tolist()))
    torch.testing.assert_close(M[0], torch.eye(len(tokens)) / math.sqrt(VS))
    M_pos, _ = stream_matching_matrix_tensor(model, data, 1, key_positions=True)
    assert diagonal_dominance(M_pos[0])["diag_argmax_frac"] == 1.0


def test_layer_two_reads_the_stream_not_the_embedding():
    model = subspace_model()
    data = matching.generate(600, "test", steps=2, seq_len=7, seed=1, n_tokens=NT)
    # the embedding measure calls layer 2 diagonal ...
    assert (
        diagonal_dominance(matching_matrix_tensor(model, 2, list(range(1, NT + 1)))[0])["diag_argmax_frac"]
        == 1.0
    )
    # ... but its query holds the query token, never the hop-1 node the rows are indexed by
    M, tokens = stream_matching_matrix_tensor(model, data, 2, key_positions=False)
    assert tokens == sorted(set(data.paths[:, 1].tolist()))
    assert (M[0].diagonal() == 0).all() and diagonal_dominance(M[0])["diag_argmax_frac"] == 0.0


def test_stream_query_differs_from_the_embedding_query_in_a_trained_like_model():
    model = Transformer(
        ModelConfig(n_layers=3, d_model=16, d_mlp=16, n_ctx=7, d_vocab=VS, norm="post", seed=3)
    )
    data = matching.generate(20, "test", steps=2, seq_len=7, seed=2, n_tokens=NT)
    stream_q = stream_queries(model, data.inputs, 2, data.query_pos)
    embed_q = carry(model, model.W_E[data.inputs[:, data.query_pos]], 0, 2)
    assert stream_q.shape == embed_q.shape == (20, 16)
    assert (stream_q - embed_q).norm(dim=-1).min() > 1e-2
    # block 0 reads the embedding plus the position (through LN1 for pre-LN)
    for norm in ("post", "pre"):
        m = Transformer(model.cfg.replace(norm=norm))
        q0 = stream_queries(m, data.inputs, 0, data.query_pos)
        x = m.W_E[data.inputs[:, 6]] + m.W_pos[6]
        torch.testing.assert_close(q0, carry(m, x, 0, 0) if norm == "pre" else x)


def test_variants_table():
    model = subspace_model()
    ids = matching.generate(300, "test", steps=2, seq_len=7, seed=0, n_tokens=NT)
    oods = matching.generate(300, "ood", steps=2, seq_len=7, seed=0, n_tokens=NT)
    df = matching_matrix_variants(model, ids, oods, n_tokens=NT)
    assert set(df.variant) == {"embedding", "embedding_positions", "embedding_ood", "stream", "stream_ood"}
    scores = matching_scores(df)
    assert set(scores.variant) == set(df.variant) and set(scores.layer) == {1, 2}
    ood1 = df[(df.variant == "stream_ood") & (df.layer == 1)]
    assert ood1.query_token.min() > NT  # OOD queries; layer 2's current node is shifted into ID
    assert df[(df.variant == "stream_ood") & (df.layer == 2)].query_token.max() <= NT
    assert df[df.variant == "embedding_ood"].query_token.min() == NT + 1
    assert len(stream_matching_matrix(model, ids, layers=[1])) == len(set(ids.paths[:, 0].tolist())) ** 2
