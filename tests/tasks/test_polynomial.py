"""Polynomial evaluation, direct and with a scratchpad: hand-made examples, every line against
Python's own arithmetic, tensors against text, the length split."""

import pytest

from reasonlens import scratchpad as S
from reasonlens.tasks import polynomial as po
from reasonlens.tasks import scratch as sp


def test_hand_made_examples():
    # 3 + 2*4 + 5*16 = 91
    assert po.format_example([3, 2, 5], 4, "direct") == "3 2 5 @ 4 = 1 <end>"
    assert po.format_example([3, 2, 5], 4, "scratchpad") == (
        "3 2 5 @ 4 = <scratch> 3 1 3 3 | 2 4 8 1 | 5 6 0 1 | </scratch> 1 <end>"
    )
    assert po.format_example([3, 2, 5], 4, "scratchpad", modulus=100) == (
        "3 2 5 @ 4 = <scratch> 3 1 0 3 0 3 0 | 2 4 0 8 0 1 1 | 5 6 1 0 8 1 9 | </scratch> 1 9 <end>"
    )
    assert po.format_example([7], 0, "direct", modulus=1000) == "7 @ 0 = 7 0 0 <end>"  # 0^0 = 1


def _check_lines_against_python(coeffs, x, modulus, lines):
    """Line k must be (c_k, x^k, c_k x^k, c_0 + ... + c_k x^k), each modulo ``modulus``, from
    Python's integers (no running product)."""
    assert len(lines) == len(coeffs)
    for k, line in enumerate(lines):
        partial = sum(c * x**j for j, c in enumerate(coeffs[: k + 1]))
        assert line == [coeffs[k], x**k % modulus, coeffs[k] * x**k % modulus, partial % modulus], (
            coeffs,
            x,
            k,
        )


@pytest.mark.parametrize("modulus", po.MODULI)
@pytest.mark.parametrize("mode", sp.MODES)
def test_tensors_match_text_and_python(mode, modulus):
    coeffs, x = po.sample_polys(200, range(1, 11), seed=4)
    data = po.from_polys(coeffs, x, mode, modulus)
    for i in range(len(data)):
        text = data.seq.text(i)
        assert text == po.format_example(coeffs[i], int(x[i]), mode, modulus)
        c, xi, lines, answer = po.parse(text, modulus)
        value = sum(ck * int(x[i]) ** k for k, ck in enumerate(coeffs[i])) % modulus
        assert (c, xi, answer) == (coeffs[i], x[i], value)
        assert int(data.value[i]) == value and int(data.seq.size[i]) == len(coeffs[i])
        if mode == "scratchpad":
            _check_lines_against_python(coeffs[i], int(x[i]), modulus, lines)
        else:
            assert lines is None


def test_no_long_polynomial_reaches_training():
    setup = S.preset("cpu", "polynomial")
    assert max(setup.train_sizes) == 8 and set(setup.ood_sizes) == {9, 10}
    terms = set()
    for mode in sp.MODES:
        source = S.train_source(setup, mode, seed=0)
        for step in range(0, 3000, 101):
            for row in source(step, 64).inputs:
                prompt = sp.decode(row[row != sp.PAD]).split(" @ ")[0]
                n_terms = len(prompt.split(" "))
                assert n_terms <= 8, (step, prompt)
                terms.add(n_terms)
    assert terms == set(range(1, 9))


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="modulus"):
        po.format_example([1, 2], 3, "direct", modulus=12)
    with pytest.raises(ValueError, match="coefficient 1"):
        po.format_example([1, 12], 3)
    with pytest.raises(ValueError, match="x must"):
        po.format_example([1, 2], -1)
    with pytest.raises(ValueError, match="0"):
        po.sample_polys(3, [0])
