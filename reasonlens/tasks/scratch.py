"""What the scratchpad tasks (:mod:`~reasonlens.tasks.addition`, :mod:`~reasonlens.tasks.polynomial`)
share: one vocabulary, the two modes and the token dataset they return.

Every example is one token sequence, right-padded with ``PAD``:

- ``"direct"``: ``prompt answer END``
- ``"scratchpad"``: ``prompt <scratch> line | line | ... </scratch> answer END``

The prompt ends with ``=`` and is the same in both modes, so a decoder starts both from the same
tokens. The loss (``batch()``'s mask) is on every token the model has to write: the scratchpad (its
markers included), the answer and ``END``. Every number is written least-significant digit first
(as in :mod:`~reasonlens.tasks.multiplication`), with a fixed width per example.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from reasonlens.tasks.batch import Batch

Mode = Literal["direct", "scratchpad"]
MODES: tuple[str, ...] = ("direct", "scratchpad")

PAD_SYMBOL, END_SYMBOL = "<pad>", "<end>"
OPEN_SYMBOL, CLOSE_SYMBOL, LINE_SYMBOL = "<scratch>", "</scratch>", "|"
SYMBOLS: tuple[str, ...] = (
    PAD_SYMBOL, *"0123456789", "+", "@", "=", OPEN_SYMBOL, CLOSE_SYMBOL, LINE_SYMBOL, END_SYMBOL,
)  # fmt: skip
TOKEN: dict[str, int] = {s: i for i, s in enumerate(SYMBOLS)}
PAD, END, OPEN, CLOSE, LINE = (
    TOKEN[s] for s in (PAD_SYMBOL, END_SYMBOL, OPEN_SYMBOL, CLOSE_SYMBOL, LINE_SYMBOL)
)
PLUS, AT, EQUALS = TOKEN["+"], TOKEN["@"], TOKEN["="]
DIGIT0 = TOKEN["0"]  # digit d is token DIGIT0 + d
D_VOCAB = len(SYMBOLS)


def encode(symbols: str | Sequence[str]) -> list[int]:
    """Token ids of a space-separated symbol string (or a list of symbols)."""
    parts = symbols.split(" ") if isinstance(symbols, str) else list(symbols)
    unknown = [s for s in parts if s not in TOKEN]
    if unknown:
        raise ValueError(f"unknown symbol(s) {unknown[:5]!r}; the vocabulary is {SYMBOLS}")
    return [TOKEN[s] for s in parts]


def decode(tokens: Sequence[int] | Tensor, skip_pad: bool = True) -> str:
    """Space-separated symbols of a token sequence (padding dropped unless ``skip_pad=False``)."""
    ids = tokens.tolist() if isinstance(tokens, Tensor) else list(tokens)
    bad = [t for t in ids if not 0 <= t < D_VOCAB]
    if bad:
        raise ValueError(f"token id(s) {bad[:5]} outside the vocabulary 0..{D_VOCAB - 1}")
    return " ".join(SYMBOLS[t] for t in ids if not (skip_pad and t == PAD))


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    return mode


def join_symbols(
    prompt: Sequence[str], lines: Sequence[Sequence[str]], answer: Sequence[str], mode: str
) -> str:
    """One example as text: the prompt, the scratchpad lines between their markers (in
    ``"scratchpad"`` mode only), the answer and the end symbol."""
    parts = list(prompt)
    if check_mode(mode) == "scratchpad":
        parts += [OPEN_SYMBOL, *[s for line in lines for s in (*line, LINE_SYMBOL)], CLOSE_SYMBOL]
    return " ".join([*parts, *answer, END_SYMBOL])


def digits_of(x: np.ndarray, width: int) -> np.ndarray:
    """``[n, width]`` digits of the non-negative ints ``x``, least significant first."""
    x = np.asarray(x, dtype=np.int64)
    return (x[:, None] // (10 ** np.arange(width, dtype=np.int64))[None, :]) % 10


def lines_of(scratch: Sequence[int] | Tensor) -> list[list[int]]:
    """The lines of a scratchpad (token ids between ``<scratch>`` and ``</scratch>``, markers
    excluded), split at ``|`` (every line ends with one); raises ValueError when it does not."""
    ids = scratch.tolist() if isinstance(scratch, Tensor) else list(scratch)
    if ids and ids[-1] != LINE:
        raise ValueError(f"a scratchpad must end with {LINE_SYMBOL!r}; got {decode(ids)!r}")
    out, line = [], []
    for t in ids:
        if t == LINE:
            out.append(line)
            line = []
        else:
            line.append(t)
    return out


@dataclass(frozen=True)
class ScratchData:
    """Examples of one task in one mode, as tokens (all tensors share the first axis).

    ``tokens[i, : length[i]]`` is example ``i``; ``tokens[i, : prompt_len[i]]`` its prompt (ending
    with ``=``); ``tokens[i, answer_start[i] : length[i] - 1]`` its answer (without ``END``).
    ``size`` is the value of the length axis (digits of the operands for addition, number of
    terms for polynomials).
    """

    tokens: Int[Tensor, "n t"]
    length: Int[Tensor, " n"]
    prompt_len: Int[Tensor, " n"]
    answer_start: Int[Tensor, " n"]
    size: Int[Tensor, " n"]
    mode: str

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, idx: int | slice | Tensor | np.ndarray | list[int]) -> ScratchData:
        """A sub-dataset (always keeps the example axis)."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return ScratchData(**{k: v[idx] if isinstance(v, Tensor) else v for k, v in fields.items()})

    @property
    def max_len(self) -> int:
        """Longest sequence (the ``n_ctx`` a model of this data needs)."""
        return int(self.length.max())

    def answer_tokens(self, i: int) -> list[int]:
        return self.tokens[i, int(self.answer_start[i]) : int(self.length[i]) - 1].tolist()

    def scratch_tokens(self, i: int) -> list[int]:
        """Example ``i``'s scratchpad between its markers (empty in direct mode)."""
        if self.mode != "scratchpad":
            return []
        return self.tokens[i, int(self.prompt_len[i]) + 1 : int(self.answer_start[i]) - 1].tolist()

    def text(self, i: int) -> str:
        return decode(self.tokens[i, : int(self.length[i])])

    def prompts(self) -> tuple[Int[Tensor, "n t_in"], Int[Tensor, " n"]]:
        """Decoding prompts (right-padded) and their lengths."""
        width = int(self.prompt_len.max())
        tokens = self.tokens[:, :width].clone()
        tokens[torch.arange(width)[None, :] >= self.prompt_len[:, None]] = PAD
        return tokens, self.prompt_len.clone()

    def batch(self, offsets: Int[Tensor, " n"] | None = None, width: int | None = None) -> Batch:
        """Next-token ``Batch`` with the loss on every written token (scratchpad, answer, ``END``).

        ``offsets[i]`` shifts example ``i`` right by that many ``PAD`` tokens (never in the loss),
        so that training puts every position of a longer context to use; ``width`` pads or checks
        the sequence width (default: what the data and offsets need). ``extra`` holds ``offset``,
        ``prompt_len`` and ``length`` (unshifted).
        """
        n, t = self.tokens.shape
        if offsets is None:
            offsets = torch.zeros(n, dtype=torch.long)
        offsets = torch.as_tensor(offsets, dtype=torch.long)
        if offsets.shape != (n,) or bool((offsets < 0).any()):
            raise ValueError(f"offsets must be {n} non-negative integers; got shape {tuple(offsets.shape)}")
        need = int((self.length + offsets).max())
        width = need if width is None else width
        if width < need:
            raise ValueError(f"width={width} is shorter than the longest shifted sequence ({need} tokens)")
        full = torch.full((n, width), PAD, dtype=torch.long)
        cols = torch.arange(t)[None, :] + offsets[:, None]
        keep = torch.arange(t)[None, :] < self.length[:, None]
        rows = torch.arange(n)[:, None].expand(n, t)
        full[rows[keep], cols[keep]] = self.tokens[keep]
        inputs, targets = full[:, :-1], full[:, 1:]
        pos = torch.arange(width - 1)[None, :]
        start, stop = offsets + self.prompt_len - 1, offsets + self.length - 1
        mask = (pos >= start[:, None]) & (pos < stop[:, None])
        extra = {"offset": offsets, "prompt_len": self.prompt_len, "length": self.length}
        return Batch(inputs.contiguous(), targets.contiguous(), mask, extra)


def assemble(
    prompt: np.ndarray, scratch: np.ndarray | None, answer: np.ndarray, size: np.ndarray, mode: str
) -> ScratchData:
    """One group of equal-layout examples: ``prompt [n, p]``, ``scratch [n, s]`` (lines and ``|``,
    without markers; None in direct mode) and ``answer [n, a]`` token arrays."""
    check_mode(mode)
    n = prompt.shape[0]
    col = lambda tok: np.full((n, 1), tok, np.int64)  # noqa: E731
    parts = [prompt]
    if mode == "scratchpad":
        parts += [col(OPEN), scratch, col(CLOSE)]
    parts += [answer, col(END)]
    tokens = np.concatenate(parts, 1)
    full = lambda v: torch.full((n,), v, dtype=torch.long)  # noqa: E731
    p, t = prompt.shape[1], tokens.shape[1]
    return ScratchData(
        tokens=torch.from_numpy(np.ascontiguousarray(tokens)), length=full(t), prompt_len=full(p),
        answer_start=full(t - 1 - answer.shape[1]), size=torch.as_tensor(size, dtype=torch.long), mode=mode,
    )  # fmt: skip


def concat(parts: Sequence[ScratchData]) -> ScratchData:
    """Stack datasets of one mode (different layouts are right-padded to the widest)."""
    if not parts:
        raise ValueError("concat: no datasets given")
    modes = {p.mode for p in parts}
    if len(modes) != 1:
        raise ValueError(f"concat: datasets of different modes {sorted(modes)}")
    width = max(p.tokens.shape[1] for p in parts)
    tokens = torch.cat(
        [torch.nn.functional.pad(p.tokens, (0, width - p.tokens.shape[1]), value=PAD) for p in parts]
    )
    cat = lambda name: torch.cat([getattr(p, name) for p in parts])  # noqa: E731
    return ScratchData(
        tokens, cat("length"), cat("prompt_len"), cat("answer_start"), cat("size"), parts[0].mode
    )
