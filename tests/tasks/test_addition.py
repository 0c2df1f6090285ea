"""Long addition, direct and with a scratchpad: hand-made examples, every scratchpad line against
Python's own arithmetic, the tensor builder against the text format, the length split."""

import numpy as np
import pytest
import torch

from reasonlens import scratchpad as S
from reasonlens.tasks import addition as ad
from reasonlens.tasks import scratch as sp


def test_hand_made_examples():
    assert ad.format_example(47, 85, "direct") == "7 4 + 5 8 = 2 3 1 <end>"
    assert ad.format_example(47, 85, "scratchpad") == (
        "7 4 + 5 8 = <scratch> 7 5 0 2 1 | 4 8 1 3 1 | </scratch> 2 3 1 <end>"
    )
    # a shorter second operand is read as 0 in the columns it lacks; the final carry may be 0
    assert ad.format_example(5, 123, "scratchpad") == (
        "5 + 3 2 1 = <scratch> 5 3 0 8 0 | 0 2 0 2 0 | 0 1 0 1 0 | </scratch> 8 2 1 0 <end>"
    )
    assert ad.format_example(0, 0, "direct") == "0 + 0 = 0 0 <end>"
    assert ad.format_example(999, 1, "direct") == "9 9 9 + 1 = 0 0 0 1 <end>"


def _check_lines_against_python(a: int, b: int, lines: list[list[int]]) -> None:
    """Each line i must be (digit i of a, digit i of b, carry into column i, digit i of a + b,
    carry out of column i), all read off Python integers, not recomputed column by column."""
    w = max(len(str(a)), len(str(b)))
    assert len(lines) == w
    for i, line in enumerate(lines):
        low = 10**i
        carry_in = (a % low + b % low) // low  # what the lower columns carry into column i
        carry_out = (a % (10 * low) + b % (10 * low)) // (10 * low)
        assert line == [a // low % 10, b // low % 10, carry_in, (a + b) // low % 10, carry_out], (a, b, i)


@pytest.mark.parametrize("a,b", [(47, 85), (5, 123), (999, 1), (0, 0), (99999999, 99999999), (10**9, 7)])
def test_scratchpad_lines_follow_python_arithmetic(a, b):
    a2, b2, lines, answer = ad.parse(ad.format_example(a, b, "scratchpad"))
    assert (a2, b2, answer) == (a, b, a + b)
    _check_lines_against_python(a, b, lines)
    assert ad.parse(ad.format_example(a, b, "direct")) == (a, b, None, a + b)


@pytest.mark.parametrize("mode", sp.MODES)
def test_tensors_match_the_text_format_and_python(mode):
    a, b, d = ad.sample_operands(300, range(1, 11), seed=3)
    data = ad.from_pairs(a, b, mode)
    for i in range(len(data)):
        text = data.seq.text(i)
        assert text == ad.format_example(int(a[i]), int(b[i]), mode)
        x, y, lines, answer = ad.parse(text)
        assert (x, y, answer) == (a[i], b[i], a[i] + b[i])
        if mode == "scratchpad":
            _check_lines_against_python(int(a[i]), int(b[i]), lines)
        assert sp.decode(data.seq.answer_tokens(i)) == " ".join(reversed(str(a[i] + b[i]).zfill(d[i] + 1)))
    # ground truth per column, against Python
    for i in range(20):
        ai, bi = int(a[i]), int(b[i])
        for col in range(int(data.columns[i])):
            low = 10**col
            assert data.carry_out[i, col] == (ai % (10 * low) + bi % (10 * low)) // (10 * low)
            assert data.digit[i, col] == (ai + bi) // low % 10
        assert (data.carry_out[i, int(data.columns[i]) :] == -1).all()


def test_sampler_digit_counts_and_determinism():
    a, b, d = ad.sample_operands(2000, [1, 3, 8], seed=1)
    assert set(d.tolist()) == {1, 3, 8}
    assert all(len(str(x)) == k and len(str(y)) == k for x, y, k in zip(a, b, d) if k > 1)
    assert (a[d == 1] <= 9).all() and (a[d == 1] == 0).any()  # 0 is a 1-digit number
    a2, b2, _ = ad.sample_operands(2000, [1, 3, 8], seed=1)
    assert (a == a2).all() and (b == b2).all()
    assert not (ad.sample_operands(2000, [1, 3, 8], seed=2)[0] == a).all()


def _operands_of_batch(batch) -> list[tuple[int, int]]:
    """Read the operands back from a training batch's tokens (padding and offsets stripped)."""
    out = []
    for row in batch.inputs:
        prompt = sp.decode(row[row != sp.PAD]).split(" = ")[0]  # "=" occurs once, ending the prompt
        a, b = (int("".join(reversed(part.split(" ")))) for part in prompt.split(" + "))
        out.append((a, b))
    return out


@pytest.mark.parametrize("mode", sp.MODES)
def test_no_long_operand_reaches_training(mode):
    """The training source of the CPU preset, read back from its tokens over many steps: every
    operand has at most 8 digits, and every training length occurs."""
    setup = S.preset("cpu", "addition")
    assert max(setup.train_sizes) == 8 and set(setup.ood_sizes) == {9, 10}
    source = S.train_source(setup, mode, seed=0)
    lengths = set()
    for step in range(0, 4000, 97):
        pairs = _operands_of_batch(source(step, 64))
        assert len(pairs) == 64
        for a, b in pairs:
            assert a < 10**8 and b < 10**8, (step, a, b)
            lengths.add(len(str(a)))
    assert lengths == set(range(1, 9))


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="-3"):
        ad.format_example(-3, 4)
    with pytest.raises(ValueError, match="mode"):
        ad.format_example(1, 2, "cot")
    with pytest.raises(ValueError, match="equal length"):
        ad.from_pairs([1, 2], [3], "direct")
    with pytest.raises(ValueError, match="0"):
        ad.sample_operands(5, [0, 3])
    with pytest.raises(ValueError, match="not an addition"):
        ad.parse("1 2 3")


def test_batch_offsets_shift_tokens_and_mask():
    data = ad.from_pairs([47, 5], [85, 3], "scratchpad").seq
    plain, shifted = data.batch(), data.batch(torch.tensor([0, 3]), width=40)
    assert shifted.inputs.shape == (2, 39)
    n1 = int(data.length[1])
    assert (shifted.inputs[1, :3] == sp.PAD).all()
    assert torch.equal(shifted.inputs[1, 3 : 3 + n1 - 1], plain.inputs[1, : n1 - 1])
    assert int(shifted.mask[1].sum()) == int(plain.mask[1].sum())
    # the loss covers exactly the written tokens: scratchpad, answer and <end>
    written = shifted.targets[1][shifted.mask[1]]
    assert sp.decode(written) == ad.format_example(5, 3, "scratchpad").split(" = ")[1]
    with pytest.raises(ValueError, match="width"):
        data.batch(torch.tensor([0, 30]), width=40)


def test_mixed_lengths_keep_their_order():
    a, b = np.array([123456, 7, 55]), np.array([1, 8, 45])
    data = ad.from_pairs(a, b, "direct")
    assert [ad.parse(data.seq.text(i))[:2] for i in range(3)] == [(123456, 1), (7, 8), (55, 45)]
    assert data.columns.tolist() == [6, 1, 2]
