"""Generated word problems against hand-made examples, the train/test split, the GSM8K reader and
the tokenizer."""

import json
import re

import pytest

from reasonlens.tasks import wordproblems as wp
from reasonlens.tasks.wordproblems import (
    ITEMS,
    NAMES,
    OPERATIONS,
    Step,
    WordProblem,
    WordTokenizer,
    generate_problems,
    make_problem,
    pair_split,
    read_gsm8k_jsonl,
    split_pairs,
    split_words,
)

CALC = re.compile(r"^(\d+) ([-+*/]) (\d+) = <<(\d+)([-+*/])(\d+)=(\d+)>>(\d+) (\w+)\.$")


def op_index(sentence_word):
    return next(k for k, (_, s, _) in enumerate(OPERATIONS) if sentence_word in s)


def test_make_problem_matches_a_hand_made_example():
    ops = [(op_index("buys"), 3), (op_index("doubles"), 2), (op_index("half"), 2), (op_index("loses"), 4)]
    p = make_problem("Ann", "pens", "Ben", 5, ops)
    assert p.question == (
        "Ann has 5 pens. Ann buys 3 more. Ann doubles them. Ann gives half to Ben. Ann loses 4. "
        "How many pens does Ann have now?"
    )
    assert p.socratic() == (
        "How many pens after buying? ** 5 + 3 = <<5+3=8>>8 pens.\n"
        "How many pens after doubling? ** 8 * 2 = <<8*2=16>>16 pens.\n"
        "How many pens after sharing? ** 16 / 2 = <<16/2=8>>8 pens.\n"
        "How many pens after losing? ** 8 - 4 = <<8-4=4>>4 pens.\n"
        "#### 4"
    )
    assert p.n_steps == 4 and p.answer == "4"


def test_make_problem_refuses_a_value_out_of_range():
    with pytest.raises(ValueError, match="not divisible"):
        make_problem("Ann", "pens", "Ben", 5, [(op_index("half"), 2)])
    with pytest.raises(ValueError, match=f"leaves 1..{wp.MAX_VALUE}"):
        make_problem("Ann", "pens", "Ben", 5, [(op_index("loses"), 5)])


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_step_is_right_by_pythons_arithmetic_and_chains(split):
    problems = generate_problems(200, split, seed=3)
    assert [p.n_steps for p in problems[:8]] == [2, 3, 4, 5, 2, 3, 4, 5]
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}
    for p in problems:
        x = p.meta["start"]
        assert 2 <= x <= wp.MAX_START
        assert p.question.startswith(f"{p.meta['name']} has {x} {p.meta['item']}.")
        assert len(p.question.split(". ")) == p.n_steps + 2  # start, one sentence per step, question
        for step in p.steps:
            m = CALC.match(step.text)
            assert m, step.text
            a, op, b, a2, op2, b2, c, c2, item = m.groups()
            assert (a, op, b, c) == (a2, op2, b2, c2) and item == p.meta["item"]
            assert int(a) == x and ops[op](int(a), int(b)) == int(c)
            assert 1 <= int(c) <= wp.MAX_VALUE and (op not in "+-" or int(b) <= wp.MAX_OPERAND)
            assert step.sub_question == f"How many {item} after {step.sub_question.split()[-1]}"
            x = int(c)
        assert p.answer == str(x)
        assert p.socratic().splitlines()[-1] == f"#### {x}"


def test_generation_is_deterministic_and_seeded():
    a = generate_problems(20, "train", seed=1)
    assert a == generate_problems(20, "train", seed=1)
    assert a != generate_problems(20, "train", seed=2)
    assert {p.n_steps for p in generate_problems(10, "test", steps=[3])} == {3}


def test_train_and_test_pairs_are_disjoint_and_cover_every_word():
    train, test = set(split_pairs("train")), set(split_pairs("test"))
    assert not train & test and len(train | test) == len(NAMES) * len(ITEMS)
    for split in (train, test):  # every name and item appears in both splits
        assert {n for n, _ in split} == set(NAMES) and {i for _, i in split} == set(ITEMS)
    tr = generate_problems(2000, "train", seed=0)
    te = generate_problems(400, "test", seed=0)
    assert all(pair_split(p.meta["name"], p.meta["item"]) == "train" for p in tr)
    assert all(pair_split(p.meta["name"], p.meta["item"]) == "test" for p in te)
    assert not {p.question for p in tr} & {p.question for p in te}
    tok = WordTokenizer.fit(wp.problem_texts(tr))
    assert all(tok.unk_id not in tok.encode(t) for t in wp.problem_texts(te))


@pytest.mark.parametrize(
    "kwargs,named",
    [({"n": 0, "split": "train"}, "0"), ({"n": 3, "split": "dev"}, "'dev'"),
     ({"n": 3, "split": "train", "steps": [6]}, "6"), ({"n": 3, "split": "train", "steps": []}, "no step")],
)  # fmt: skip
def test_bad_requests_name_the_value(kwargs, named):
    with pytest.raises(ValueError, match=named):
        generate_problems(**kwargs)


def test_pair_split_names_unknown_words():
    with pytest.raises(ValueError, match="'Zed'"):
        pair_split("Zed", "pens")


# -- GSM8K reader ---------------------------------------------------------------------------------

SOCRATIC = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
    "clips in May. How many clips did Natalia sell altogether in April and May?",
    "answer": "How many clips did Natalia sell in May? ** Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "How many clips did Natalia sell altogether in April and May? ** Natalia sold 48+24 = <<48+24=72>>72 "
    "clips altogether in April and May.\n#### 72",
}
PLAIN = {"question": "Weng earns $12 an hour. How much did she earn for 50 minutes?",
         "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n"
                   "She earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 1,000"}  # fmt: skip


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_reader_parses_socratic_and_plain_lines(tmp_path):
    path = write_lines(tmp_path / "g.jsonl", [json.dumps(SOCRATIC), "", json.dumps(PLAIN)])
    soc, plain = read_gsm8k_jsonl(path)
    assert soc.question == SOCRATIC["question"] and soc.answer == "72" and soc.n_steps == 2
    assert soc.steps[0] == Step(
        "How many clips did Natalia sell in May?", "Natalia sold 48/2 = <<48/2=24>>24 clips in May."
    )
    assert soc.socratic() == SOCRATIC["answer"]
    assert plain.answer == "1000" and plain.sub_questions == ("", "")
    assert plain.steps[1].text == "She earned 0.2 x 50 = $<<0.2*50=10>>10."


@pytest.mark.parametrize(
    "bad,why",
    [("{not json", "Expecting"), (json.dumps([1, 2]), "JSON object"),
     (json.dumps({"question": "q"}), "'answer'"),
     (json.dumps({"question": 3, "answer": "#### 1"}), "'question'"),
     (json.dumps({"question": "q", "answer": "a step\nno final line"}), "####"),
     (json.dumps({"question": "q", "answer": "#### "}), "no answer")],
)  # fmt: skip
def test_reader_names_file_and_line_of_a_malformed_line(tmp_path, bad, why):
    path = write_lines(tmp_path / "bad.jsonl", [json.dumps(SOCRATIC), json.dumps(PLAIN), bad])
    with pytest.raises(ValueError) as err:
        read_gsm8k_jsonl(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:3: malformed GSM8K line") and why in msg, msg
    assert "\n" not in msg


def test_reader_missing_or_empty_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_gsm8k_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="no problems"):
        read_gsm8k_jsonl(write_lines(tmp_path / "empty.jsonl", ["", "  "]))


# -- tokenizer ------------------------------------------------------------------------------------


def test_split_words_and_decode():
    text = "How many? ** 12 + 3 = <<12+3=15>>15 pens.\n#### 15"
    assert split_words(text) == ["How", "many", "?", "**", "1", "2", "+", "3", "=", "<<", "1", "2", "+", "3",
                                 "=", "1", "5", ">>", "1", "5", "pens", ".", "####", "1", "5"]  # fmt: skip
    tok = WordTokenizer.fit([text], specials=("<sep>",))
    assert tok.vocab[:3] == ["<pad>", "<unk>", "<sep>"] and len(tok) == len(set(split_words(text))) + 3
    assert tok.decode(tok.encode("12 + 3 = 15 pens")) == "12 + 3 = 15 pens"
    assert tok.encode("twelve") == [tok.unk_id]
    with pytest.raises(ValueError, match="'sep'"):
        WordTokenizer([], specials=("sep",))


def test_wordproblem_layout_of_a_hand_made_problem():
    p = WordProblem("Q?", (Step("A?", "1 + 1 = <<1+1=2>>2 x."),), "2")
    assert p.socratic() == "A? ** 1 + 1 = <<1+1=2>>2 x.\n#### 2"
