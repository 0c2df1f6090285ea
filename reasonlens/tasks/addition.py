"""Long addition, written directly or with a scratchpad of the grade-school algorithm (after Nye et
al. 2021, "Show Your Work: Scratchpads for Intermediate Computation with Language Models").

Numbers are written least-significant digit first, one token per digit (the order in which the
algorithm produces them; see :mod:`~reasonlens.tasks.scratch` for the vocabulary). For ``a + b``
with ``w = max(digits of a, digits of b)`` columns:

- the prompt is ``a``'s digits, ``+``, ``b``'s digits, ``=``;
- the answer is ``a + b`` in ``w + 1`` digits (its last, most significant digit is the final
  carry, possibly 0), then ``<end>``;
- with a scratchpad, ``<scratch>`` comes first, then one line per column ``i = 0 .. w-1``:
  ``a_i b_i carry_in digit carry_out |`` (the two digits added, 0 where an operand is shorter; the
  carry in; the digit written, ``(a_i + b_i + carry_in) % 10``; the carry out, which is the next
  line's carry in), then ``</scratch>`` and the answer.

Worked example, 47 + 85 = 132:

>>> print(format_example(47, 85, "direct"))
7 4 + 5 8 = 2 3 1 <end>
>>> print(format_example(47, 85, "scratchpad").replace("| ", "|\\n"))
7 4 + 5 8 = <scratch> 7 5 0 2 1 |
4 8 1 3 1 |
</scratch> 2 3 1 <end>

Column 0 adds 7 + 5 + 0 = 12: digit 2, carry 1; column 1 adds 4 + 8 + 1 = 13: digit 3, carry 1,
which is the answer's last digit. Every example carries its ground truth per column (the digits
added, carries in and out, the digit written), the targets of the carry probes.

The length-generalization split of the paper: train on operands of 1 to 8 digits
(:data:`TRAIN_DIGITS`), test on 1 to 10 (:data:`TEST_DIGITS`); :func:`sample_operands` draws
both operands of an example with the same number of digits, and training sources only ever ask it
for :data:`TRAIN_DIGITS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from reasonlens.tasks import scratch as sp
from reasonlens.tasks.scratch import DIGIT0, EQUALS, LINE, PLUS, ScratchData

TRAIN_DIGITS: tuple[int, ...] = tuple(range(1, 9))
TEST_DIGITS: tuple[int, ...] = tuple(range(1, 11))
MAX_DIGITS = 17  # the sum of two 17-digit numbers fits in int64
LINE_WIDTH = 6  # tokens per scratchpad line: a_i b_i carry_in digit carry_out |


def _n_digits(x: int) -> int:
    return len(str(int(x)))


def _check_operand(name: str, x: object) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 0:
        raise ValueError(f"{name} must be a non-negative integer; got {x!r}")
    if _n_digits(x) > MAX_DIGITS:
        raise ValueError(f"{name} may have at most {MAX_DIGITS} digits; got {x!r}")
    return int(x)


def format_parts(a: int, b: int) -> tuple[list[str], list[list[str]], list[str]]:
    """Prompt symbols, scratchpad lines (each without its ``|``) and answer symbols of ``a + b``,
    computed digit by digit in plain Python."""
    a, b = _check_operand("a", a), _check_operand("b", b)
    w = max(_n_digits(a), _n_digits(b))
    prompt = [*reversed(str(a)), "+", *reversed(str(b)), "="]
    lines, carry = [], 0
    for i in range(w):
        x, y = (a // 10**i) % 10, (b // 10**i) % 10
        total = x + y + carry
        lines.append([str(x), str(y), str(carry), str(total % 10), str(total // 10)])
        carry = total // 10
    answer = [str(((a + b) // 10**j) % 10) for j in range(w + 1)]
    return prompt, lines, answer


def format_example(a: int, b: int, mode: str = "scratchpad") -> str:
    """The symbols of ``a + b`` in ``mode`` (``"direct"`` or ``"scratchpad"``)."""
    sp.check_mode(mode)
    prompt, lines, answer = format_parts(a, b)
    return sp.join_symbols(prompt, lines, answer, mode)


@dataclass(frozen=True)
class AdditionData:
    """Additions ``a + b`` as tokens (``seq``) plus their ground truth per column ``i`` (least
    significant first; ``-1`` beyond an example's ``w`` columns): ``a_digit``, ``b_digit``,
    ``carry_in``, ``digit`` (``(a_i + b_i + carry_in) % 10``) and ``carry_out``."""

    seq: ScratchData
    a: Int[Tensor, " n"]
    b: Int[Tensor, " n"]
    a_digit: Int[Tensor, "n w"]
    b_digit: Int[Tensor, "n w"]
    carry_in: Int[Tensor, "n w"]
    digit: Int[Tensor, "n w"]
    carry_out: Int[Tensor, "n w"]

    def __len__(self) -> int:
        return len(self.seq)

    @property
    def columns(self) -> Int[Tensor, " n"]:
        """Columns per example: the digits of the longer operand (the ``size``)."""
        return self.seq.size


def from_pairs(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray, mode: str) -> AdditionData:
    """The additions ``a[k] + b[k]`` in ``mode``, built in numpy column by column."""
    sp.check_mode(mode)
    a = np.asarray(a, dtype=np.int64).reshape(-1)
    b = np.asarray(b, dtype=np.int64).reshape(-1)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"a and b must be non-empty and of equal length; got {a.size} and {b.size}")
    for name, x in (("a", a), ("b", b)):
        if (x < 0).any():
            raise ValueError(f"operands must be non-negative; got {name}={int(x[x < 0][0])}")
        if (x >= 10**MAX_DIGITS).any():
            raise ValueError(f"operands may have at most {MAX_DIGITS} digits; got {name}={int(x.max())}")
    da, db = _digits_array(a), _digits_array(b)
    w_all = np.maximum(da, db)
    W = int(w_all.max())
    truth = {
        k: np.full((a.size, W), -1, np.int64)
        for k in ("a_digit", "b_digit", "carry_in", "digit", "carry_out")
    }
    groups, order = [], []
    for key in sorted({(int(x), int(y)) for x, y in zip(da, db)}):
        idx = np.nonzero((da == key[0]) & (db == key[1]))[0]
        seq, cols = _build_group(a[idx], b[idx], key[0], key[1], mode)
        for name, v in cols.items():
            truth[name][idx, : v.shape[1]] = v
        groups.append(seq)
        order.append(idx)
    seq = sp.concat(groups)[torch.from_numpy(np.argsort(np.concatenate(order), kind="stable"))]
    as_t = lambda x: torch.from_numpy(np.ascontiguousarray(x))  # noqa: E731
    return AdditionData(seq, as_t(a), as_t(b), **{k: as_t(v) for k, v in truth.items()})


def _digits_array(x: np.ndarray) -> np.ndarray:
    return np.array([_n_digits(v) for v in x], dtype=np.int64)


def _build_group(a: np.ndarray, b: np.ndarray, da: int, db: int, mode: str) -> tuple[ScratchData, dict]:
    """Tokens and per-column truth of additions of a ``da``-digit and a ``db``-digit number."""
    n, w = a.size, max(da, db)
    ad, bd = sp.digits_of(a, w), sp.digits_of(b, w)
    carry_in = np.zeros((n, w), np.int64)
    digit = np.zeros((n, w), np.int64)
    carry_out = np.zeros((n, w), np.int64)
    carry = np.zeros(n, np.int64)
    for i in range(w):
        total = ad[:, i] + bd[:, i] + carry
        carry_in[:, i], digit[:, i], carry_out[:, i] = carry, total % 10, total // 10
        carry = total // 10
    col = lambda tok: np.full((n, 1), tok, np.int64)  # noqa: E731
    prompt = np.concatenate([DIGIT0 + ad[:, :da], col(PLUS), DIGIT0 + bd[:, :db], col(EQUALS)], 1)
    lines = np.stack([ad, bd, carry_in, digit, carry_out], 2) + DIGIT0  # [n, w, 5]
    scratch = np.concatenate([lines, np.full((n, w, 1), LINE, np.int64)], 2).reshape(n, w * LINE_WIDTH)
    answer = DIGIT0 + sp.digits_of(a + b, w + 1)
    seq = sp.assemble(prompt, scratch if mode == "scratchpad" else None, answer, np.full(n, w), mode)
    return seq, {"a_digit": ad, "b_digit": bd, "carry_in": carry_in, "digit": digit, "carry_out": carry_out}


def _check_digit_list(digits: Sequence[int], what: str = "digits") -> list[int]:
    if isinstance(digits, (int, np.integer)):
        digits = [digits]
    out = []
    for d in digits:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 1 <= d <= MAX_DIGITS:
            raise ValueError(f"{what} must be integers in 1..{MAX_DIGITS}; got {d!r}")
        out.append(int(d))
    if not out:
        raise ValueError(f"{what}: no digit counts given")
    return out


def sample_operands(
    n: int, digits: Sequence[int], seed: int | Sequence[int] = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` pairs ``(a, b)`` and their digit count ``d``: ``d`` uniform over ``digits`` per pair,
    then ``a`` and ``b`` uniform over the ``d``-digit numbers (0..9 for ``d = 1``). Seeded by
    ``seed`` alone (an int or a sequence of ints)."""
    digits = _check_digit_list(digits)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    seeds = [seed] if isinstance(seed, (int, np.integer)) else list(seed)
    rng = np.random.default_rng([*seeds, 0xADD])
    d = rng.choice(np.array(digits, dtype=np.int64), size=n)
    lo = np.where(d > 1, 10 ** (d - 1), 0)
    hi = 10**d  # exclusive
    a = rng.integers(lo, hi, dtype=np.int64)
    b = rng.integers(lo, hi, dtype=np.int64)
    return a, b, d


def sample(n: int, digits: Sequence[int], mode: str, seed: int | Sequence[int] = 0) -> AdditionData:
    """:func:`sample_operands` as an :class:`AdditionData` in ``mode``."""
    a, b, _ = sample_operands(n, digits, seed)
    return from_pairs(a, b, mode)


def parse(text: str) -> tuple[int, int, list[list[int]] | None, int]:
    """``(a, b, scratchpad lines or None, answer)`` of an example's symbols (either mode), after
    checking its layout; the lines' values are returned as written, not checked."""
    syms = text.split(" ")
    try:
        plus, eq, end = syms.index("+"), syms.index("="), syms.index(sp.END_SYMBOL)
    except ValueError as err:
        raise ValueError(f"not an addition example ({err}): {text!r}") from None
    num = lambda part: int("".join(reversed(part)))  # noqa: E731
    a, b = num(syms[:plus]), num(syms[plus + 1 : eq])
    rest = syms[eq + 1 : end]
    lines = None
    if rest and rest[0] == sp.OPEN_SYMBOL:
        close = rest.index(sp.CLOSE_SYMBOL)
        lines = [[t - DIGIT0 for t in line] for line in sp.lines_of(sp.encode(rest[1:close]))]
        rest = rest[close + 1 :]
    return a, b, lines, num(rest)
