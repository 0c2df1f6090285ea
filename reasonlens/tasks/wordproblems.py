"""Multi-step arithmetic word problems with a sub-question decomposition, in GSM8K's "socratic" layout.

GSM8K cannot be downloaded here, so problems are generated from templates: a person starts with
some items and then changes how many they have, one operation per sentence (2 to 5 operations);
the question asks how many they have at the end. Every operation is one step of the solution,
written as in GSM8K-socratic (Cobbe et al. 2021; Shridhar et al. 2023): one line per step,
``sub-question ** step text with <<a op b=c>>c``, and a last line ``#### answer``.

>>> p = WordProblem(
...     question="Ann has 5 pens. Ann buys 3 more. Ann doubles them. How many pens does Ann have now?",
...     steps=(Step("How many pens after buying?", "5 + 3 = <<5+3=8>>8 pens."),
...            Step("How many pens after doubling?", "8 * 2 = <<8*2=16>>16 pens.")),
...     answer="16")
>>> print(p.socratic())
How many pens after buying? ** 5 + 3 = <<5+3=8>>8 pens.
How many pens after doubling? ** 8 * 2 = <<8*2=16>>16 pens.
#### 16

Train and test problems are new to each other: every (person, item) pair belongs to exactly one
split (:func:`pair_split`), so no test problem can occur in training, while every name and every
item occurs in both splits (so a word-level tokenizer fitted on training text knows every test
word). Operands are drawn so that every intermediate value is a whole number in ``1..MAX_VALUE``.

:func:`read_gsm8k_jsonl` reads real GSM8K or GSM8K-socratic files (one ``{"question": ...,
"answer": ...}`` object per line) from a path the user gives, into the same :class:`WordProblem`;
plain GSM8K answers (no ``**``) give steps with empty sub-questions.

:class:`WordTokenizer` is a word-level tokenizer for small models trained from scratch: words,
single digits (numbers are spelled digit by digit, so arithmetic needs no number vocabulary),
``<<``, ``>>``, ``**``, ``####`` and single punctuation marks are tokens.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# -- the seeded vocabulary ---------------------------------------------------------------------------

NAMES: tuple[str, ...] = (
    "Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jo", "Kim", "Leo",
)  # fmt: skip
ITEMS: tuple[str, ...] = ("apples", "pens", "coins", "cards", "shells", "books", "stamps", "marbles")
MAX_VALUE = 99  # every quantity (start, intermediate, answer) stays in 1..MAX_VALUE
MAX_START, MAX_OPERAND = 20, 9  # a start in 2..MAX_START; added or taken: 1..MAX_OPERAND
MIN_STEPS, MAX_STEPS = 2, 5
SPLITS = ("train", "test")
TEST_EVERY = 4  # (name i, item j) is a test pair when (i + j) % TEST_EVERY == 0

# One entry per operation: (operation, sentence, sub-question). Steps are written by `_step`.
OPERATIONS: tuple[tuple[str, str, str], ...] = (
    ("+", "{name} buys {b} more.", "How many {item} after buying?"),
    ("+", "{name} finds {b} more.", "How many {item} after finding?"),
    ("-", "{name} gives {b} to {friend}.", "How many {item} after giving?"),
    ("-", "{name} loses {b}.", "How many {item} after losing?"),
    ("*", "{name} doubles them.", "How many {item} after doubling?"),
    ("*", "{name} triples them.", "How many {item} after tripling?"),
    ("/", "{name} gives half to {friend}.", "How many {item} after sharing?"),
)


@dataclass(frozen=True)
class Step:
    """One step: its sub-question (empty for plain GSM8K) and its text, e.g. ``5 + 3 = <<5+3=8>>8 pens.``"""

    sub_question: str
    text: str

    def line(self) -> str:
        return f"{self.sub_question} ** {self.text}" if self.sub_question else self.text


@dataclass(frozen=True)
class WordProblem:
    """A question, its steps and its final answer (a number as text, commas removed)."""

    question: str
    steps: tuple[Step, ...]
    answer: str
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    @property
    def sub_questions(self) -> tuple[str, ...]:
        return tuple(s.sub_question for s in self.steps)

    def socratic(self) -> str:
        """The answer in GSM8K-socratic layout: one line per step, then ``#### answer``."""
        return "\n".join([*(s.line() for s in self.steps), f"#### {self.answer}"])


def pair_split(name: str, item: str) -> str:
    """ "test" for a quarter of the (name, item) pairs, "train" for the others."""
    if name not in NAMES:
        raise ValueError(f"unknown name {name!r}; the names are {NAMES}")
    if item not in ITEMS:
        raise ValueError(f"unknown item {item!r}; the items are {ITEMS}")
    return "test" if (NAMES.index(name) + ITEMS.index(item)) % TEST_EVERY == 0 else "train"


def split_pairs(split: str) -> list[tuple[str, str]]:
    """The (name, item) pairs of ``split``, in a fixed order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    return [(n, i) for n in NAMES for i in ITEMS if pair_split(n, i) == split]


def _operand(op: str, x: int, rng: random.Random) -> int | None:
    """An operand for ``x op b`` keeping the result in 1..MAX_VALUE, or None when there is none."""
    if op == "+":
        hi = min(MAX_OPERAND, MAX_VALUE - x)
        return rng.randint(1, hi) if hi >= 1 else None
    if op == "-":
        return rng.randint(1, min(MAX_OPERAND, x - 1)) if x >= 2 else None
    if op == "*":
        return None  # the factor is fixed by the sentence
    return 2 if x % 2 == 0 else None


def _apply(op: str, x: int, b: int) -> int:
    return {"+": x + b, "-": x - b, "*": x * b, "/": x // b}[op]


def _step_text(x: int, op: str, b: int, c: int, item: str) -> str:
    return f"{x} {op} {b} = <<{x}{op}{b}={c}>>{c} {item}."


def make_problem(
    name: str, item: str, friend: str, start: int, ops: Sequence[tuple[int, int]]
) -> WordProblem:
    """The problem whose person ``name`` starts with ``start`` ``item`` and applies, in turn, the
    operations ``OPERATIONS[k]`` with operand ``b`` for each ``(k, b)`` of ``ops`` (for ``*`` the
    operand must be 2 for "doubles" and 3 for "triples"; for ``/`` it must be 2)."""
    sentences, steps, x = [f"{name} has {start} {item}."], [], start
    for k, b in ops:
        op, sentence, sub_q = OPERATIONS[k]
        c = _apply(op, x, b)
        if op == "/" and x % b:
            raise ValueError(f"{x} is not divisible by {b}")
        if not 1 <= c <= MAX_VALUE:
            raise ValueError(f"{x} {op} {b} = {c} leaves 1..{MAX_VALUE}")
        sentences.append(sentence.format(name=name, b=b, friend=friend))
        steps.append(Step(sub_q.format(item=item), _step_text(x, op, b, c, item)))
        x = c
    sentences.append(f"How many {item} does {name} have now?")
    meta = {"name": name, "item": item, "friend": friend, "start": start}
    return WordProblem(" ".join(sentences), tuple(steps), str(x), meta)


def _random_problem(rng: random.Random, pairs: Sequence[tuple[str, str]], n_steps: int) -> WordProblem:
    name, item = rng.choice(pairs)
    friend = rng.choice([n for n in NAMES if n != name])
    while True:  # rejection: some operation sequences leave the allowed range (rare)
        start, ops = rng.randint(2, MAX_START), []
        x = start
        for _ in range(n_steps):
            choices = []
            for k, (op, sentence, _) in enumerate(OPERATIONS):
                b = (2 if "doubles" in sentence else 3) if op == "*" else _operand(op, x, rng)
                if b is not None and 1 <= _apply(op, x, b) <= MAX_VALUE:
                    choices.append((k, b))
            if not choices:
                break
            k, b = rng.choice(choices)
            ops.append((k, b))
            x = _apply(OPERATIONS[k][0], x, b)
        if len(ops) == n_steps:
            return make_problem(name, item, friend, start, ops)


def check_steps(steps: Sequence[int]) -> tuple[int, ...]:
    """``steps`` as a sorted tuple, or ValueError naming a step count outside MIN_STEPS..MAX_STEPS."""
    out = tuple(sorted(set(steps)))
    if not out:
        raise ValueError("no step counts given")
    for s in out:
        if isinstance(s, bool) or not isinstance(s, int) or not MIN_STEPS <= s <= MAX_STEPS:
            raise ValueError(f"step count must be an integer in {MIN_STEPS}..{MAX_STEPS}; got {s!r}")
    return out


def generate_problems(
    n: int, split: str, seed: int = 0, steps: Sequence[int] = (2, 3, 4, 5)
) -> list[WordProblem]:
    """``n`` problems of ``split`` ("train" or "test"), their step counts cycling through ``steps``
    (so a test set is balanced), deterministic in ``(n, split, seed, steps)``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    step_counts = check_steps(steps)
    pairs = split_pairs(split)
    rng = random.Random(f"wordproblems/{split}/{seed}")
    return [_random_problem(rng, pairs, step_counts[i % len(step_counts)]) for i in range(n)]


# -- reading GSM8K ------------------------------------------------------------------------------------


def parse_socratic(question: str, answer: str) -> WordProblem:
    """A :class:`WordProblem` from a GSM8K(-socratic) question and answer text (ValueError if the
    answer has no final ``#### answer`` line)."""
    lines = [ln.strip() for ln in answer.strip().split("\n") if ln.strip()]
    if not lines or not lines[-1].startswith("####"):
        raise ValueError("the answer's last line must be '#### <answer>'")
    final = lines[-1][4:].strip().replace(",", "")
    if not final:
        raise ValueError("the '####' line has no answer after it")
    steps = []
    for ln in lines[:-1]:
        if "####" in ln:
            raise ValueError(f"'####' before the last line: {ln!r}")
        sub_q, sep, text = ln.partition(" ** ")
        steps.append(Step(sub_q.strip(), text.strip()) if sep else Step("", ln))
    return WordProblem(question.strip(), tuple(steps), final)


def read_gsm8k_jsonl(path: str | os.PathLike) -> list[WordProblem]:
    """Every problem of a GSM8K or GSM8K-socratic JSONL file (blank lines are skipped). A malformed
    line raises one ValueError naming the file and the line number."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no GSM8K file at {path}")
    problems = []
    with path.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
                if not isinstance(obj, dict):
                    raise ValueError("expected a JSON object")
                for key in ("question", "answer"):
                    if not isinstance(obj.get(key), str):
                        raise ValueError(f"field {key!r} missing or not a string")
                p = parse_socratic(obj["question"], obj["answer"])
                problems.append(dataclasses.replace(p, meta={"file": str(path), "line": lineno}))
            except ValueError as err:  # json.JSONDecodeError is a ValueError
                raise ValueError(f"{path}:{lineno}: malformed GSM8K line: {err}") from None
    if not problems:
        raise ValueError(f"{path}: no problems in the file")
    return problems


def require_sub_questions(problems: Iterable[WordProblem]) -> None:
    """ValueError naming the first problem (its file and line when read from one) with a step
    that has no sub-question: the decomposer and the sub-question solver need GSM8K-socratic."""
    for i, p in enumerate(problems):
        if any(not s.sub_question for s in p.steps) or not p.steps:
            where = f"{p.meta['file']}:{p.meta['line']}" if "file" in p.meta else f"problem {i}"
            raise ValueError(
                f"{where}: a step has no sub-question ('sub-question ** step'); the decomposer needs "
                "GSM8K-socratic answers"
            )


# -- tokenizer ---------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"<<|>>|\*\*|####|\d|[A-Za-z]+|[^\sA-Za-z\d]")
PAD, UNK = "<pad>", "<unk>"


def split_words(text: str) -> list[str]:
    """The token strings of ``text``: words, single digits, ``<< >> ** ####`` and punctuation."""
    return _TOKEN_RE.findall(text)


class WordTokenizer:
    """Word-level tokenizer: id 0 is ``<pad>``, 1 ``<unk>``, then ``specials`` (markers the
    sequence formats need, never produced by :func:`split_words`), then the words in sorted order."""

    def __init__(self, words: Iterable[str], specials: Sequence[str] = ()):
        for s in specials:
            if split_words(s) == [s]:
                raise ValueError(f"special token {s!r} could occur in text; use a name like '<sep>'")
        rest = sorted(set(words) - {PAD, UNK, *specials})
        self.vocab: list[str] = [PAD, UNK, *specials, *rest]
        self.index: dict[str, int] = {w: i for i, w in enumerate(self.vocab)}
        if len(self.index) != len(self.vocab):
            raise ValueError(f"duplicate special tokens in {list(specials)!r}")

    @classmethod
    def fit(cls, texts: Iterable[str], specials: Sequence[str] = ()) -> WordTokenizer:
        words: set[str] = set()
        for t in texts:
            words.update(split_words(t))
        return cls(words, specials)

    def __len__(self) -> int:
        return len(self.vocab)

    def __getitem__(self, token: str) -> int:
        return self.index[token]

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, 1) for w in split_words(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Tokens joined by spaces, digits of one number joined (for reading, not a round trip)."""
        out = ""
        prev_digit = False
        for i in ids:
            w = self.vocab[int(i)]
            digit = w.isdigit()
            out += w if (digit and prev_digit) or not out else " " + w
            prev_digit = digit
        return out


def problem_texts(problems: Iterable[WordProblem]) -> Iterable[str]:
    for p in problems:
        yield p.question
        yield p.answer
        for s in p.steps:
            yield s.sub_question
            yield s.text
