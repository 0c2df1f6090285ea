"""Stepwise internalization (Deng, Choi and Shieber 2024): train on the explicit chain of thought,
then remove its tokens from the left on a schedule until only ``input SEP SEP #### answer END`` is
left, so the model learns to do the removed steps in its layers.

The pieces, each a plain part of the one training loop:

- :class:`RemovalSchedule`: how many CoT tokens are removed at optimizer step ``s`` (a pure
  function of the step, so a resumed run removes exactly what an uninterrupted one would); the
  steps at which that number grows are where the optimizer is reset (``train(...,
  reset_optimizer_at=schedule.is_removal_step)``).
- :func:`smoothing_offsets`: removal smoothing, an extra offset ``o >= 0`` per example with
  ``P(o)`` proportional to ``exp(-lambda o)`` (lambda 4: 98% of examples get none).
- :func:`remove_cot_tokens`: a batch with ``r`` CoT tokens cut after the first separator, positions
  renumbered contiguously (the sequence is simply shorter), the second separator always kept, and
  the loss on every token after the first separator.
- :class:`InternalizationSource`: the batch source combining the three.

Differences from the authors' code (``da03/Internalize_CoT_Step_by_Step``), by design: the schedule
is counted in optimizer steps rather than epochs, and may dwell longer on later tokens
(:meth:`RemovalSchedule.ramp`), because on a CPU the budget per removed token is ~100x smaller than
theirs (one token per ~3,150 steps at batch 32).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from reasonlens.tasks.batch import Batch
from reasonlens.tasks.multiplication import PAD, MultiplicationData
from reasonlens.training.sources import BatchSource, FixedSource


@dataclass(frozen=True)
class RemovalSchedule:
    """``dwell[k]`` optimizer steps are spent with ``k`` CoT tokens removed, for ``k = 0..len-1``;
    after them every token is removed (``n_tokens = len(dwell)``) until the end of training.

    ``dwell[0]`` is the explicit-CoT warm-up before the first removal.
    """

    dwell: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "dwell", tuple(self.dwell))
        if not self.dwell:
            raise ValueError("RemovalSchedule.dwell is empty: there must be at least one CoT token")
        bad = [d for d in self.dwell if isinstance(d, bool) or not isinstance(d, int) or d < 1]
        if bad:
            raise ValueError(f"RemovalSchedule.dwell must hold positive integers; got {bad[:3]}")

    @classmethod
    def linear(cls, n_tokens: int, steps_per_token: int, warmup: int | None = None) -> RemovalSchedule:
        """One token removed every ``steps_per_token`` steps, after ``warmup`` explicit-CoT steps
        (default: ``steps_per_token``)."""
        _check_positive("n_tokens", n_tokens)
        _check_positive("steps_per_token", steps_per_token)
        warmup = steps_per_token if warmup is None else warmup
        _check_positive("warmup", warmup)
        return cls((warmup, *([steps_per_token] * (n_tokens - 1))))

    @classmethod
    def ramp(cls, n_tokens: int, first: int, last: int, warmup: int | None = None) -> RemovalSchedule:
        """Dwell times growing geometrically from ``first`` (the first removed token) to ``last``
        (the last one): fast through the early partial products, slow at the running sums that the
        model has to learn to compute internally. ``warmup`` defaults to ``first``."""
        _check_positive("n_tokens", n_tokens)
        _check_positive("first", first)
        _check_positive("last", last)
        warmup = first if warmup is None else warmup
        _check_positive("warmup", warmup)
        k = n_tokens - 1
        if k == 0:
            return cls((warmup,))
        ratio = (last / first) ** (1 / max(k - 1, 1))
        dwell = [max(1, round(first * ratio**i)) for i in range(k)]
        return cls((warmup, *dwell))

    @property
    def n_tokens(self) -> int:
        return len(self.dwell)

    @property
    def boundaries(self) -> tuple[int, ...]:
        """``boundaries[k]`` is the first step with ``k + 1`` tokens removed."""
        out, total = [], 0
        for d in self.dwell:
            total += d
            out.append(total)
        return tuple(out)

    @property
    def end(self) -> int:
        """The first step at which every CoT token is removed."""
        return self.boundaries[-1]

    def removed_at(self, step: int) -> int:
        """CoT tokens removed at optimizer step ``step`` (0-based)."""
        return bisect.bisect_right(self.boundaries, step)

    def is_removal_step(self, step: int) -> bool:
        """True at the steps where one more token is removed (where the optimizer is reset)."""
        return step > 0 and self.removed_at(step) > self.removed_at(step - 1)

    def to_dict(self) -> dict[str, list[int]]:
        return {"dwell": list(self.dwell)}


def _check_positive(name: str, v: object) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive integer; got {v!r}")


def smoothing_probabilities(lam: float, max_offset: int) -> Tensor:
    """``P(o)`` for ``o = 0..max_offset``, proportional to ``exp(-lam * o)``."""
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(f"removal smoothing lambda must be a finite number >= 0; got {lam!r}")
    w = torch.exp(-lam * torch.arange(max_offset + 1, dtype=torch.float64))
    return w / w.sum()


def smoothing_offsets(
    n: int, lam: float, max_offset: int, generator: torch.Generator | None = None
) -> Int[Tensor, " n"]:
    """``n`` extra removal offsets drawn from :func:`smoothing_probabilities` (``lam=inf`` or
    ``max_offset=0``: all zero)."""
    if max_offset <= 0 or lam == math.inf:
        return torch.zeros(n, dtype=torch.long)
    p = smoothing_probabilities(lam, max_offset)
    return torch.multinomial(p, n, replacement=True, generator=generator)


def remove_cot_tokens(batch: Batch, removed: Int[Tensor, " batch"]) -> Batch:
    """The explicit-CoT ``batch`` (from ``MultiplicationData.batch("cot")``) with ``removed[i]``
    CoT tokens cut from the left of example ``i`` (capped at its CoT length, so the second separator
    stays), positions renumbered, the width trimmed to the longest result.

    The loss is on every token after the first separator, as in the explicit-CoT batch.
    """
    for key in ("sep", "sep2", "length"):
        if key not in batch.extra:
            raise ValueError(f"remove_cot_tokens needs a 'cot' batch with extra[{key!r}]")
    sep1, sep2, length = batch.extra["sep"], batch.extra["sep2"], batch.extra["length"]
    r = removed.to(sep1.device).clamp(min=0)
    r = torch.minimum(r, sep2 - sep1 - 1)
    tokens = torch.cat([batch.inputs[:, :1], batch.targets], dim=1)  # the full sequences
    width = tokens.shape[1]
    pos = torch.arange(width, device=tokens.device)[None, :]
    src = torch.where(pos > sep1[:, None], pos + r[:, None], pos).clamp(max=width - 1)
    new_len = length - r
    out = tokens.gather(1, src)
    out[pos >= new_len[:, None]] = PAD
    keep = int(new_len.max())
    out = out[:, :keep]
    inputs, targets = out[:, :-1], out[:, 1:]
    p = pos[:, : keep - 1]
    mask = (p >= sep1[:, None]) & (p < new_len[:, None] - 1)
    extra = {k: v for k, v in batch.extra.items()}
    extra.update(sep2=sep2 - r, length=new_len, removed=r)
    return Batch(inputs.contiguous(), targets.contiguous(), mask, extra)


def final_format(data: MultiplicationData) -> Batch:
    """``input SEP SEP #### answer END``: what a fully internalized model reads and writes."""
    batch = data.batch("cot")
    return remove_cot_tokens(batch, batch.extra["sep2"] - batch.extra["sep"] - 1)


class InternalizationSource:
    """Epochs over explicit-CoT training data with ``schedule.removed_at(step)`` tokens removed
    plus a smoothing offset per example (``lam``; ``math.inf`` turns smoothing off).

    A pure function of the step like every source: the offsets come from a generator seeded by
    ``(seed, step)``.
    """

    def __init__(
        self,
        data: MultiplicationData | Batch,
        schedule: RemovalSchedule,
        lam: float = 4.0,
        seed: int = 0,
    ):
        batch = data.batch("cot") if isinstance(data, MultiplicationData) else data
        cot_len = batch.extra["sep2"] - batch.extra["sep"] - 1
        if schedule.n_tokens < int(cot_len.max()):
            raise ValueError(
                f"the schedule removes {schedule.n_tokens} tokens but the chain of thought has up to "
                f"{int(cot_len.max())}: build it with n_tokens={int(cot_len.max())}"
            )
        if lam != math.inf:
            smoothing_probabilities(lam, 0)  # validates lam
        self.base: BatchSource = FixedSource(batch, seed=seed)
        self.schedule = schedule
        self.lam = lam
        self.seed = seed
        self.max_cot = int(cot_len.max())

    def removed_at(self, step: int) -> int:
        return self.schedule.removed_at(step)

    def __call__(self, step: int, batch_size: int) -> Batch:
        batch = self.base(step, batch_size)
        k = self.schedule.removed_at(step)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step + 7)
        offsets = smoothing_offsets(len(batch), self.lam, self.max_cot - k, gen)
        return remove_cot_tokens(batch, torch.full((len(batch),), k) + offsets)


__all__: Sequence[str] = (
    "InternalizationSource", "RemovalSchedule", "final_format", "remove_cot_tokens",
    "smoothing_offsets", "smoothing_probabilities",
)  # fmt: skip
