"""Answer-position probes and attention: layouts, targets, and the tables' contents."""

import numpy as np
import pytest
import torch

from reasonlens.analysis.attention import attention_patterns
from reasonlens.icot.answer_probes import (
    answer_attention,
    answer_inputs,
    answer_targets,
    probe_answer_positions,
)
from reasonlens.models import Transformer
from reasonlens.tasks import multiplication as M
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def data():
    return M.make_splits((3, 3), n_train=200, n_valid=4, n_test=4, seed=1)["train"]


def model_for(tokens, seed=0):
    return Transformer(tiny_config(d_vocab=M.D_VOCAB, n_ctx=tokens.shape[1], seed=seed))


@pytest.mark.parametrize("fmt, seps", [("nocot", 1), ("internalized", 2)])
def test_answer_inputs_point_at_the_token_before_the_first_answer_digit(data, fmt, seps):
    tokens, start = answer_inputs(data, fmt)
    sep = M.encode("||")[0]
    row = tokens[0].tolist()
    assert row[start - seps : start] == [sep] * seps and row[start] == M.encode("####")[0]
    digits = M.decode(row[start + 1 : start + 6]).split()
    assert digits == list(str(int(data.a[0] * data.b[0])).zfill(6)[::-1])[:5]


def test_answer_targets_hold_each_digits_running_sum_carry_and_partial_product_digit(data):
    tokens, start = answer_inputs(data, "nocot")
    t = answer_targets(data, start, tokens.shape[1])
    for i in range(5):
        a, b = int(data.a[i]), int(data.b[i])
        ad, bd = [a // 10**k % 10 for k in range(3)], [b // 10**k % 10 for k in range(3)]
        carry = 0
        for k in range(6):
            col = sum(ad[p] * bd[k - p] for p in range(3) if 0 <= k - p < 3)
            at = start + k
            assert t["column_sum"][i, at] == col and t["carry_in"][i, at] == carry
            assert t["running_sum"][i, at] == col + carry
            assert t["answer_digit"][i, at] == (a * b) // 10**k % 10
            for j in range(3):
                pp = a * bd[j] * 10**j
                expect = pp // 10**k % 10 if k < j + 4 else -1  # partial product j has j + 4 digits
                assert t[f"pp{j}.digit"][i, at] == expect
            carry = (col + carry) // 10
    outside = np.ones(tokens.shape[1], dtype=bool)
    outside[start : start + 6] = False
    assert np.isnan(t["running_sum"][:, outside]).all() and (t["carry_in"][:, outside] == -1).all()


def test_probe_answer_positions_covers_every_layer_digit_and_target(data):
    tokens, _ = answer_inputs(data, "internalized")
    table = probe_answer_positions(model_for(tokens), data, "internalized", test_frac=0.5)
    assert sorted(table.layer.unique()) == [0, 1, 2]
    assert sorted(table.answer_digit.unique()) == list(range(6))
    sums = table[table.target == "running_sum"]
    assert set(sums.metric) == {"r2"} and len(sums) == 3 * 6
    assert set(table[table.target == "carry_in"].metric) == {"accuracy"}
    # entering block 0, the position predicting digit 0 holds one fixed token ("####") and position
    # for every example: nothing to decode there
    first = sums[(sums.layer == 0) & (sums.answer_digit == 0)]
    assert len(first) == 1 and first.score.item() <= 1e-6


def test_answer_attention_is_the_mean_pattern_from_answer_positions_to_operand_digits(data):
    tokens, start = answer_inputs(data, "nocot")
    model = model_for(tokens, seed=3)
    table = answer_attention(model, data, "nocot")
    assert len(table) == 2 * 2 * 6 * 6  # layers x heads x answer digits x operand digits
    pattern = attention_patterns(model, tokens).mean(0)
    row = table[(table.layer == 1) & (table["head"] == 0) & (table.answer_digit == 4)]
    a1 = row[(row.operand == "a") & (row.operand_digit == 1)].weight.item()
    b2 = row[(row.operand == "b") & (row.operand_digit == 2)].weight.item()
    assert a1 == pytest.approx(float(pattern[1, 0, start + 4, 1]))
    assert b2 == pytest.approx(float(pattern[1, 0, start + 4, 3 + 1 + 2]))
    assert torch.all(torch.tensor(table.weight.values) >= 0)


def test_mixed_operand_sizes_are_refused():
    mixed = M.from_pairs([12, 345], [34, 678])
    with pytest.raises(ValueError, match="one operand size"):
        answer_inputs(mixed, "nocot")
