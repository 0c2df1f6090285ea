"""Polynomial evaluation at an integer point, directly or with a scratchpad that evaluates and
writes every term before the sum (after Nye et al. 2021's polynomial task).

``p(x) = c_0 + c_1 x + ... + c_(T-1) x^(T-1)`` with single-digit coefficients ``c_k`` and point
``x`` (0..9), evaluated modulo ``modulus`` (a power of ten, default 10), so every number has the
same width ``w = log10(modulus)`` digits, written least-significant digit first. ``T``, the number
of terms, is the length axis (the ``size``; train on 1..8 terms, test on up to 10).

- prompt: ``c_0 c_1 ... c_(T-1) @ x =``;
- answer: ``p(x) mod modulus`` (``w`` digits), then ``<end>``;
- scratchpad: ``<scratch>``, one line per term ``k``: ``c_k power_k term_k sum_k |`` with
  ``power_k = x^k``, ``term_k = c_k * power_k`` and ``sum_k = term_0 + ... + term_k`` (the
  running sum), all modulo ``modulus``; then ``</scratch>`` and the answer (``sum_(T-1)``).

Worked example, ``p(x) = 3 + 2x + 5x^2`` at ``x = 4`` (``3 + 8 + 80 = 91``), modulo 10:

>>> print(format_example([3, 2, 5], 4, "direct"))
3 2 5 @ 4 = 1 <end>
>>> print(format_example([3, 2, 5], 4, "scratchpad").replace("| ", "|\\n"))
3 2 5 @ 4 = <scratch> 3 1 3 3 |
2 4 8 1 |
5 6 0 1 |
</scratch> 1 <end>

(``4^2 = 16 -> 6``, ``5 * 6 = 30 -> 0``, ``3 + 8 = 11 -> 1``.) With ``modulus=100`` the same
polynomial's lines are ``3 1 0 3 0 3 0 |``, ``2 4 0 8 0 1 1 |`` and so on: every number two
digits, least significant first, the coefficient one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from reasonlens.tasks import scratch as sp
from reasonlens.tasks.scratch import AT, DIGIT0, EQUALS, LINE, ScratchData

TRAIN_TERMS: tuple[int, ...] = tuple(range(1, 9))
TEST_TERMS: tuple[int, ...] = tuple(range(1, 11))
MAX_TERMS = 64
MODULI: tuple[int, ...] = (10, 100, 1000)


def check_modulus(modulus: int) -> int:
    if isinstance(modulus, bool) or modulus not in MODULI:
        raise ValueError(f"modulus must be one of {MODULI}; got {modulus!r}")
    return int(modulus)


def width_of(modulus: int) -> int:
    """Digits per number modulo ``modulus``."""
    return len(str(check_modulus(modulus))) - 1


def _check_poly(coeffs: Sequence[int], x: int) -> tuple[list[int], int]:
    coeffs = list(coeffs)
    if not 1 <= len(coeffs) <= MAX_TERMS:
        raise ValueError(f"a polynomial needs 1..{MAX_TERMS} coefficients; got {len(coeffs)}")
    for name, v in [*((f"coefficient {k}", c) for k, c in enumerate(coeffs)), ("x", x)]:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v <= 9:
            raise ValueError(f"{name} must be a digit 0..9; got {v!r}")
    return [int(c) for c in coeffs], int(x)


def _digits(v: int, w: int) -> list[str]:
    return [str((v // 10**j) % 10) for j in range(w)]


def format_parts(
    coeffs: Sequence[int], x: int, modulus: int = 10
) -> tuple[list[str], list[list[str]], list[str]]:
    """Prompt symbols, scratchpad lines (each without its ``|``) and answer symbols, in plain Python."""
    coeffs, x = _check_poly(coeffs, x)
    w = width_of(modulus)
    prompt = [*map(str, coeffs), "@", str(x), "="]
    lines, total = [], 0
    for k, c in enumerate(coeffs):
        power = pow(x, k, modulus)
        term = c * power % modulus
        total = (total + term) % modulus
        lines.append([str(c), *_digits(power, w), *_digits(term, w), *_digits(total, w)])
    value = sum(c * x**k for k, c in enumerate(coeffs)) % modulus
    return prompt, lines, _digits(value, w)


def format_example(coeffs: Sequence[int], x: int, mode: str = "scratchpad", modulus: int = 10) -> str:
    """The symbols of ``p(x) mod modulus`` in ``mode``."""
    sp.check_mode(mode)
    prompt, lines, answer = format_parts(coeffs, x, modulus)
    return sp.join_symbols(prompt, lines, answer, mode)


@dataclass(frozen=True)
class PolynomialData:
    """Polynomial evaluations as tokens (``seq``) and their ground truth per term ``k`` (``-1``
    beyond an example's terms): ``coeffs``, ``power`` (``x^k``), ``term`` and ``running_sum``, all
    modulo ``modulus``; ``value`` is the answer."""

    seq: ScratchData
    x: Int[Tensor, " n"]
    coeffs: Int[Tensor, "n t"]
    power: Int[Tensor, "n t"]
    term: Int[Tensor, "n t"]
    running_sum: Int[Tensor, "n t"]
    value: Int[Tensor, " n"]
    modulus: int

    def __len__(self) -> int:
        return len(self.seq)


def from_polys(
    coeffs: Sequence[Sequence[int]], x: Sequence[int], mode: str, modulus: int = 10
) -> PolynomialData:
    """Evaluations of ``coeffs[i]`` (lists of digits, any lengths) at ``x[i]`` in ``mode``."""
    sp.check_mode(mode)
    w = width_of(modulus)
    x = np.asarray(x, dtype=np.int64).reshape(-1)
    polys = [list(c) for c in coeffs]
    if len(polys) != x.size or x.size == 0:
        raise ValueError(f"coeffs and x must be non-empty and of equal length; got {len(polys)} and {x.size}")
    for c, xi in zip(polys, x.tolist()):
        _check_poly(c, xi)
    terms = np.array([len(c) for c in polys], dtype=np.int64)
    T = int(terms.max())
    n = x.size
    truth = {k: np.full((n, T), -1, np.int64) for k in ("coeffs", "power", "term", "running_sum")}
    value = np.zeros(n, np.int64)
    groups, order = [], []
    for t in sorted(set(terms.tolist())):
        idx = np.nonzero(terms == t)[0]
        c = np.array([polys[i] for i in idx], dtype=np.int64)
        xs = x[idx]
        power = np.ones((idx.size, t), np.int64)
        for k in range(1, t):
            power[:, k] = power[:, k - 1] * xs % modulus
        term = c * power % modulus
        running = np.cumsum(term, axis=1) % modulus
        for name, v in (("coeffs", c), ("power", power), ("term", term), ("running_sum", running)):
            truth[name][idx, :t] = v
        value[idx] = running[:, -1]
        col = lambda tok, m=idx.size: np.full((m, 1), tok, np.int64)  # noqa: E731
        prompt = np.concatenate([DIGIT0 + c, col(AT), DIGIT0 + xs[:, None], col(EQUALS)], 1)
        dig = lambda v, m=idx.size, t=t: sp.digits_of(v.reshape(-1), w).reshape(m, t, w)  # noqa: E731
        lines = np.concatenate([c[:, :, None], dig(power), dig(term), dig(running)], 2) + DIGIT0
        lines = np.concatenate([lines, np.full((idx.size, t, 1), LINE, np.int64)], 2).reshape(idx.size, -1)
        answer = DIGIT0 + sp.digits_of(running[:, -1], w)
        groups.append(
            sp.assemble(prompt, lines if mode == "scratchpad" else None, answer, np.full(idx.size, t), mode)
        )
        order.append(idx)
    seq = sp.concat(groups)[torch.from_numpy(np.argsort(np.concatenate(order), kind="stable"))]
    as_t = lambda v: torch.from_numpy(np.ascontiguousarray(v))  # noqa: E731
    return PolynomialData(
        seq, as_t(x), **{k: as_t(v) for k, v in truth.items()}, value=as_t(value), modulus=modulus
    )


def _check_terms(terms: Sequence[int]) -> list[int]:
    if isinstance(terms, (int, np.integer)):
        terms = [terms]
    out = []
    for t in terms:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 1 <= t <= MAX_TERMS:
            raise ValueError(f"terms must be integers in 1..{MAX_TERMS}; got {t!r}")
        out.append(int(t))
    if not out:
        raise ValueError("terms: no term counts given")
    return out


def sample_polys(
    n: int, terms: Sequence[int], seed: int | Sequence[int] = 0
) -> tuple[list[list[int]], np.ndarray]:
    """``n`` polynomials, their number of terms uniform over ``terms``, coefficients and the point
    uniform over 0..9; seeded by ``seed`` alone."""
    terms = _check_terms(terms)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    seeds = [seed] if isinstance(seed, (int, np.integer)) else list(seed)
    rng = np.random.default_rng([*seeds, 0x9017])
    t = rng.choice(np.array(terms, dtype=np.int64), size=n)
    coeffs = rng.integers(0, 10, size=(n, int(t.max())))
    x = rng.integers(0, 10, size=n)
    return [coeffs[i, : t[i]].tolist() for i in range(n)], x


def sample(
    n: int, terms: Sequence[int], mode: str, seed: int | Sequence[int] = 0, modulus: int = 10
) -> PolynomialData:
    """:func:`sample_polys` as a :class:`PolynomialData` in ``mode``."""
    check_modulus(modulus)
    coeffs, x = sample_polys(n, terms, seed)
    return from_polys(coeffs, x, mode, modulus)


def parse(text: str, modulus: int = 10) -> tuple[list[int], int, list[list[int]] | None, int]:
    """``(coeffs, x, scratchpad lines or None, answer)`` of an example's symbols; each line as
    ``[c, power, term, sum]`` numbers (not checked)."""
    w = width_of(modulus)
    syms = text.split(" ")
    try:
        at, eq, end = syms.index("@"), syms.index("="), syms.index(sp.END_SYMBOL)
    except ValueError as err:
        raise ValueError(f"not a polynomial example ({err}): {text!r}") from None
    num = lambda part: int("".join(reversed(part)))  # noqa: E731
    coeffs, x = [int(s) for s in syms[:at]], int(syms[at + 1])
    rest = syms[eq + 1 : end]
    lines = None
    if rest and rest[0] == sp.OPEN_SYMBOL:
        close = rest.index(sp.CLOSE_SYMBOL)
        lines = []
        for line in sp.lines_of(sp.encode(rest[1:close])):
            s = [str(t - DIGIT0) for t in line]
            if len(s) != 1 + 3 * w:
                raise ValueError(f"a polynomial scratchpad line has {1 + 3 * w} symbols; got {s}")
            lines.append([int(s[0]), *(num(s[1 + j * w : 1 + (j + 1) * w]) for j in range(3))])
        rest = rest[close + 1 :]
    return coeffs, x, lines, num(rest)
