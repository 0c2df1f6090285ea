"""OOD analysis on tiny models and hand-made predictions."""

import pytest
import torch

from reasonlens.analysis.ood import (
    CATEGORIES,
    classify_answers,
    embedding_norms,
    ood_accuracy,
    ood_answers,
    ood_data,
    with_ood_rows,
)
from reasonlens.models import ModelConfig, Transformer
from reasonlens.tasks import matching

N = 10  # n_tokens: ID 1..10, OOD 11..20
V = 2 * N + 1


def tiny(seed=0):
    return Transformer(ModelConfig(n_layers=2, d_model=8, d_mlp=8, n_ctx=13, d_vocab=V, seed=seed))


def set_rows(model, id_norm, ood_norm, pos_norm):
    with torch.no_grad():
        for rows, norm in ((slice(1, N + 1), id_norm), (slice(N + 1, V), ood_norm)):
            W = model.W_E[rows]
            model.W_E[rows] = W / W.norm(dim=-1, keepdim=True) * norm
        model.W_pos.copy_(model.W_pos / model.W_pos.norm(dim=-1, keepdim=True) * pos_norm)


def test_embedding_norms_and_ratios():
    model = tiny()
    set_rows(model, 2.0, 0.5, 1.0)
    n = embedding_norms(model, N)
    assert n["id_norm"] == pytest.approx(2.0) and n["ood_norm"] == pytest.approx(0.5)
    assert n["ood_id_ratio"] == pytest.approx(0.25) and n["pos_id_ratio"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no OOD rows"):
        embedding_norms(model, N + 1)


def test_variants_change_only_the_ood_rows_of_a_copy():
    model = tiny()
    set_rows(model, 2.0, 0.5, 1.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    raw = with_ood_rows(model, "raw", N)
    resc = with_ood_rows(model, "rescaled", N)
    rnd = with_ood_rows(model, "random_directions", N, seed=3)
    for k, v in model.state_dict().items():  # the model itself is untouched
        torch.testing.assert_close(v, before[k])
    torch.testing.assert_close(raw.W_E, model.W_E)
    for m in (resc, rnd):
        torch.testing.assert_close(m.W_E[: N + 1], model.W_E[: N + 1])
        torch.testing.assert_close(m.W_E[N + 1 :].norm(dim=-1), torch.full((N,), 2.0))
        torch.testing.assert_close(m.W_pos, model.W_pos)
    # rescaled keeps the directions, random directions do not; the latter are seeded
    cos = torch.nn.functional.cosine_similarity(resc.W_E[N + 1 :], model.W_E[N + 1 :], dim=-1)
    torch.testing.assert_close(cos, torch.ones(N))
    cos_rnd = torch.nn.functional.cosine_similarity(rnd.W_E[N + 1 :], model.W_E[N + 1 :], dim=-1)
    assert (cos_rnd.abs() < 0.999).all()
    torch.testing.assert_close(with_ood_rows(model, "random_directions", N, seed=3).W_E, rnd.W_E)
    assert not torch.equal(with_ood_rows(model, "random_directions", N, seed=4).W_E, rnd.W_E)
    with pytest.raises(ValueError, match="variant must be one of"):
        with_ood_rows(model, "doubled", N)


def make_data():
    return ood_data(6, seed=1, n_tokens=N, seq_len=7)


def test_classify_answers_covers_every_category():
    data = make_data()
    inputs = data.inputs
    answer, hop1 = data.answers, data.paths[:, 1]
    other = torch.tensor([next(t for t in row.tolist() if t not in (a, h)) for row, a, h in
                          zip(inputs, answer.tolist(), hop1.tolist())])  # fmt: skip
    absent = torch.tensor([next(t for t in range(1, V) if t not in row.tolist()) for row in inputs])
    preds = torch.stack([answer, hop1, other, absent], dim=1)[
        torch.arange(6), torch.tensor([0, 1, 2, 3, 0, 3])
    ]
    codes = classify_answers(preds, data)
    assert [CATEGORIES[c] for c in codes] == [
        "answer", "hop1_node", "other_in_context", "not_in_context", "answer", "not_in_context",
    ]  # fmt: skip


def test_ood_tables():
    model = tiny()
    data = ood_data(50, seed=2, n_tokens=N, seq_len=7)
    acc = ood_accuracy(model, data, seed=0)
    assert list(acc.variant) == ["raw", "rescaled", "random_directions"]
    assert acc.accuracy.between(0, 1).all() and (acc.n == 50).all()
    assert acc.ood_norm.iloc[1] == pytest.approx(acc.id_norm.iloc[1])
    ans = ood_answers(model, data, variants=("raw", "rescaled"))
    assert list(ans.columns) == ["variant", "category", "count", "fraction"]
    assert (ans.groupby("variant")["count"].sum() == 50).all()
    # ood_answers' "answer" fraction is the accuracy (one answer token per example)
    raw = ans[(ans.variant == "raw") & (ans.category == "answer")].fraction.iloc[0]
    assert raw == pytest.approx(acc.accuracy.iloc[0])
    assert matching.vocab_size("single_chain", 7, N) == V
