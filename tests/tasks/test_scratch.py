"""The scratchpad tasks' shared vocabulary and token dataset."""

import pytest
import torch

from reasonlens.tasks import addition as ad
from reasonlens.tasks import polynomial as po
from reasonlens.tasks import scratch as sp


def test_encode_decode_round_trip_and_errors():
    text = "7 4 + 5 8 = <scratch> 7 5 0 2 1 | </scratch> 2 <end>"
    assert sp.decode(sp.encode(text)) == text
    assert sp.decode([sp.PAD, *sp.encode("1 2"), sp.PAD]) == "1 2"
    with pytest.raises(ValueError, match="'x'"):
        sp.encode("1 x 2")
    with pytest.raises(ValueError, match="99"):
        sp.decode([1, 99])


def test_lines_of_splits_at_the_line_marker():
    assert sp.lines_of(sp.encode("1 2 | 3 |")) == [sp.encode("1 2"), sp.encode("3")]
    assert sp.lines_of([]) == []
    with pytest.raises(ValueError, match="end with"):
        sp.lines_of(sp.encode("1 2 | 3"))


def test_spans_prompts_and_concat():
    add = ad.from_pairs([47, 123456], [85, 1], "scratchpad").seq
    for i, (a, b) in enumerate([(47, 85), (123456, 1)]):
        prompt, lines, answer = ad.format_parts(a, b)
        assert sp.decode(add.tokens[i, : int(add.prompt_len[i])]) == " ".join(prompt)
        assert sp.decode(add.answer_tokens(i)) == " ".join(answer)
        assert sp.lines_of(add.scratch_tokens(i)) == [sp.encode(line) for line in lines]
    prompts, lengths = add.prompts()
    assert prompts.shape == (2, int(add.prompt_len.max())) and (prompts[0, int(lengths[0]) :] == sp.PAD).all()
    poly = po.from_polys([[1, 2]], [3], "scratchpad").seq
    both = sp.concat([add, poly])
    assert len(both) == 3 and both.text(2) == poly.text(0) and both.text(0) == add.text(0)
    with pytest.raises(ValueError, match="modes"):
        sp.concat([add, ad.from_pairs([1], [2], "direct").seq])
    assert ad.from_pairs([1], [2], "direct").seq.scratch_tokens(0) == []
    with pytest.raises(ValueError, match="offsets"):
        add.batch(torch.tensor([-1, 0]))
