"""Exact-match accuracy and decoding throughput by batched greedy decoding, for every method.

Every method starts from the same prompt, ``input SEP``:

- ``"nocot"``: a plain model generates ``#### answer END``;
- ``"cot"``: the teacher generates ``cot SEP #### answer END``;
- ``"implicit"``: the emulator reads the prompt once, then the student generates ``#### answer END``
  with the emulated states written at the separator on every step;
- ``"internalized"``: a stepwise-internalized model, whose chain of thought was removed down to its
  second separator, reads ``input SEP SEP`` (that separator is given, as it is in the authors'
  evaluation) and generates ``#### answer END``.

An example is correct when generation ended with ``END`` and the symbols between the first
``####`` and ``END`` are exactly the answer's digits (the chain of thought itself is not graded, as
in the authors' evaluation). ``digit_accuracy`` also credits answers that are partly right: the
fraction of answer digits matched position by position. Throughput is examples (and generated
tokens) per second of wall time for the whole decode, emulator included, measured with the
KV-cache-free decoder of :mod:`reasonlens.models.decoding`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Int
from torch import Tensor, nn

from reasonlens.icot.modules import ImplicitCoT
from reasonlens.models.decoding import greedy_decode
from reasonlens.tasks.multiplication import ANSWER, END, PAD, SEP, MultiplicationData, decode

Method = Literal["nocot", "cot", "implicit", "internalized"]
METHODS: tuple[str, ...] = ("nocot", "cot", "implicit", "internalized")


@dataclass
class GenerationResult:
    method: str
    accuracy: float
    n_examples: int
    seconds: float
    tokens_generated: int
    digit_accuracy: float  # answer digits right, position by position, over all answer digits
    correct: torch.Tensor = field(repr=False)  # [n] bool
    outputs: list[str] = field(repr=False, default_factory=list)  # generated symbols per example
    # digit_accuracy of each answer position, least significant digit first (the answers' order)
    digit_accuracy_by_position: list[float] = field(repr=False, default_factory=list)

    @property
    def examples_per_second(self) -> float:
        return self.n_examples / self.seconds if self.seconds > 0 else float("nan")

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_generated / self.seconds if self.seconds > 0 else float("nan")


def answer_of(generated: list[int]) -> list[int] | None:
    """The tokens between the first ``####`` and the first ``END`` after it (None if either is
    missing)."""
    if ANSWER not in generated:
        return None
    rest = generated[generated.index(ANSWER) + 1 :]
    return rest[: rest.index(END)] if END in rest else None


def _n_ctx(model: nn.Module) -> int:
    if isinstance(model, ImplicitCoT):
        return model.student.cfg.n_ctx
    return model.cfg.n_ctx


def _second_separator(prompts: Int[Tensor, "n t"], lengths: Int[Tensor, " n"]) -> Int[Tensor, "n t+1"]:
    """``input SEP`` prompts with one more ``SEP`` after each."""
    out = torch.cat([prompts, torch.full_like(prompts[:, :1], PAD)], dim=1)
    out[torch.arange(len(out)), lengths] = SEP
    return out


@torch.no_grad()
def generate_answers(
    method: Method,
    model: nn.Module,
    data: MultiplicationData,
    batch_size: int = 500,
    slack: int = 2,
    keep_outputs: bool = False,
) -> GenerationResult:
    """Greedy-decode every example of ``data`` with ``model`` and grade the answers.

    ``max_new_tokens`` is the longest correct continuation plus ``slack``, capped by the model's
    ``n_ctx``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if method == "implicit" and not isinstance(model, ImplicitCoT):
        raise ValueError(f"method 'implicit' needs an ImplicitCoT model; got {type(model).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    prompts, plen = data.prompts()
    full = data.len_cot if method == "cot" else data.len_nocot
    if method == "internalized":
        prompts, plen, full = _second_separator(prompts, plen), plen + 1, full + 1
    room = _n_ctx(model) - int(plen.max())
    if room < int((full - plen).max()):
        raise ValueError(
            f"the model's n_ctx={_n_ctx(model)} is too short for these examples (need "
            f"{int(full.max())} tokens for method {method!r})"
        )
    max_new = min(int((full - plen).max()) + slack, room)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct, outputs, n_gen = [], [], 0
    width = int((data.len_nocot - data.sep1 - 3).max())  # answer digits of the longest answer
    right, total = torch.zeros(width, dtype=torch.long), torch.zeros(width, dtype=torch.long)
    t0 = time.perf_counter()
    for i in range(0, len(data), batch_size):
        p, lengths = prompts[i : i + batch_size].to(device), plen[i : i + batch_size].to(device)
        p = p[:, : int(lengths.max())]
        if method == "implicit":
            sep = lengths - 1
            states = model.emulator(p, sep)
            forward = lambda t, s=states, q=sep: model.student(t, s, q)  # noqa: E731
        else:
            forward = model
        out = greedy_decode(forward, p, lengths, max_new, end_token=END, pad_token=PAD)
        n_gen += out.n_generated
        for b in range(len(lengths)):
            gen = out.generated(b)
            truth = data.answer_tokens(i + b)
            pred = answer_of(gen)
            correct.append(bool(out.finished[b]) and pred == truth)
            if pred is None:  # no END: grade whatever follows ####
                pred = gen[gen.index(ANSWER) + 1 :] if ANSWER in gen else []
            pred = (pred + [PAD] * len(truth))[: len(truth)]
            right[: len(truth)] += torch.tensor([p == t for p, t in zip(pred, truth)], dtype=torch.long)
            total[: len(truth)] += 1
            if keep_outputs:
                outputs.append(decode(gen))
    seconds = time.perf_counter() - t0
    model.train(was_training)
    ok = torch.tensor(correct, dtype=torch.bool)
    accuracy = sum(correct) / len(correct)
    digit_accuracy = int(right.sum()) / max(int(total.sum()), 1)
    by_position = (right / total.clamp_min(1)).tolist()
    return GenerationResult(
        method, accuracy, len(data), seconds, n_gen, digit_accuracy, ok, outputs, by_position
    )
