"""Token sequences of the three models of decompositional distillation (Shridhar et al. 2023).

With ``Q`` the question's tokens, ``s_k`` the k-th sub-question and ``a_k`` the k-th step (the
sub-answer, e.g. ``5 + 3 = <<5+3=8>>8 pens.``), and the markers ``<sep>``, ``<q>``, ``<nl>``,
``<end>`` (tokens no text can produce):

- CoT solver:        ``Q <sep> a_1 <nl> ... a_n <nl> #### answer <end>``
- decomposer:        ``Q <sep> s_1 <nl> s_2 <nl> ... s_n <end>``
- sub-question solver: ``Q <sep> s_1 <q> a_1 <nl> s_2 <q> a_2 <nl> ... s_n <q> a_n <nl>``

The CoT solver and the decomposer are trained on every token after ``<sep>``. The sub-question
solver is trained on the answers ``a_k <nl>`` only: under causal attention, the loss at ``a_k`` is
exactly that of the model asked ``Q``, the pairs ``(s_j, a_j)`` for ``j < k`` and ``s_k`` (the
paper's solver input), so one sequence trains all ``n`` sub-questions of a problem at once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from reasonlens.tasks.batch import Batch
from reasonlens.tasks.wordproblems import WordProblem, WordTokenizer, problem_texts

SEP, QMARK, NL, END = "<sep>", "<q>", "<nl>", "<end>"
SPECIALS = (SEP, QMARK, NL, END)
MODELS = ("cot", "decomposer", "solver")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")

Piece = tuple[list[int], bool]  # tokens, trained on them


def tokenizer_for(problems: Sequence[WordProblem]) -> WordTokenizer:
    """A word tokenizer fitted on ``problems`` (with ``####`` always in it) and the markers."""
    return WordTokenizer.fit([*problem_texts(problems), "####"], SPECIALS)


def _pieces(tok: WordTokenizer, p: WordProblem, model: str) -> list[Piece]:
    sep, qm, nl, end = (tok[s] for s in SPECIALS)
    pieces: list[Piece] = [(tok.encode(p.question) + [sep], False)]
    if model == "cot":
        for s in p.steps:
            pieces.append((tok.encode(s.text) + [nl], True))
        pieces.append((tok.encode(f"#### {p.answer}") + [end], True))
    elif model == "decomposer":
        subs = [tok.encode(s.sub_question) for s in p.steps]
        for i, ids in enumerate(subs):
            pieces.append((ids + [end if i == len(subs) - 1 else nl], True))
    elif model == "solver":
        for s in p.steps:
            pieces.append((tok.encode(s.sub_question) + [qm], False))
            pieces.append((tok.encode(s.text) + [nl], True))
    else:
        raise ValueError(f"model must be one of {MODELS}; got {model!r}")
    return pieces


def sequence(tok: WordTokenizer, p: WordProblem, model: str) -> tuple[list[int], list[bool]]:
    """The token ids of ``p`` in ``model``'s format and, per token, whether it is trained on."""
    ids: list[int] = []
    trained: list[bool] = []
    for piece, on in _pieces(tok, p, model):
        ids += piece
        trained += [on] * len(piece)
    return ids, trained


def max_length(tok: WordTokenizer, problems: Sequence[WordProblem]) -> int:
    """The longest sequence of ``problems`` in any of the three formats."""
    return max(len(sequence(tok, p, m)[0]) for p in problems for m in MODELS)


def generation_limits(tok: WordTokenizer, problems: Sequence[WordProblem], margin: int = 8) -> dict[str, int]:
    """The most tokens each model may generate at inference: the longest continuation of its
    training format over ``problems`` (for the solver: one sub-answer and its ``<nl>``) plus
    ``margin``, so that a model that never stops costs a bounded time."""
    limits = {m: 0 for m in MODELS}
    for p in problems:
        n_prompt = len(tok.encode(p.question)) + 1
        for m in ("cot", "decomposer"):
            limits[m] = max(limits[m], len(sequence(tok, p, m)[0]) - n_prompt)
        limits["solver"] = max([limits["solver"], *(len(tok.encode(s.text)) + 1 for s in p.steps)])
    return {m: v + margin for m, v in limits.items()}


def trim(batch: Batch) -> Batch:
    """``batch`` without its trailing columns of padding (no real input and no trained target)."""
    used = (batch.inputs != 0) | batch.mask
    cols = used.any(dim=0).nonzero()
    width = int(cols.max()) + 1 if len(cols) else 1
    return Batch(batch.inputs[:, :width], batch.targets[:, :width], batch.mask[:, :width], batch.extra)


def make_batch(tok: WordTokenizer, problems: Sequence[WordProblem], model: str) -> Batch:
    """Right-padded next-token batch: ``targets[b, t] = ids[t + 1]``, masked where that token is trained."""
    if not problems:
        raise ValueError("make_batch: no problems")
    seqs = [sequence(tok, p, model) for p in problems]
    width = max(len(ids) for ids, _ in seqs) - 1
    inputs = torch.full((len(seqs), width), tok.pad_id, dtype=torch.long)
    targets = torch.full_like(inputs, tok.pad_id)
    mask = torch.zeros_like(inputs, dtype=torch.bool)
    for b, (ids, on) in enumerate(seqs):
        n = len(ids) - 1
        inputs[b, :n] = torch.tensor(ids[:-1])
        targets[b, :n] = torch.tensor(ids[1:])
        mask[b, :n] = torch.tensor(on[1:])
    extra = {"n_steps": torch.tensor([p.n_steps for p in problems])}
    return Batch(inputs, targets, mask, extra)


def last_number(text: str) -> str | None:
    """The last number written in ``text`` (how a sub-answer's result is read), or None."""
    found = _NUMBER.findall(text.replace(",", ""))
    return found[-1] if found else None


def cot_answer(text: str) -> str | None:
    """The number after ``####`` in a decoded CoT continuation, or None."""
    _, sep, rest = text.partition("####")
    return last_number(rest.split("\n")[0]) if sep else None


def same_number(predicted: str | None, answer: str) -> bool:
    """Exact match of two numbers written as text (``16`` and ``16.0`` agree)."""
    if predicted is None:
        return False
    try:
        return float(predicted) == float(answer)
    except ValueError:
        return predicted == answer
