"""Choosing the training precision (fp32 or bf16 autocast) by measurement on the machine at hand.

Whether bf16 autocast speeds training up depends on the hardware: on one 2-core CPU it was 1.6x
faster, on another 1.7x *slower* (a main-job step 0.287 s against 0.169 s in fp32). So ``auto``
times a few optimizer steps of the run's own model in both precisions, through the one training
loop, and picks the faster; ``fp32`` and ``bf16`` are taken as given.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from reasonlens.tasks.batch import Batch
from reasonlens.training.sources import BatchSource
from reasonlens.training.trainer import TrainConfig, train

PRECISIONS = ("auto", "fp32", "bf16")
Timer = Callable[[], float]


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a grid trains in, and why."""

    precision: str  # "fp32" or "bf16"
    requested: str  # "auto", "fp32" or "bf16"
    seconds_per_step: dict[str, float] = field(default_factory=dict)  # measured (auto only)
    reason: str = ""

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    def describe(self) -> str:
        """One line for a script's output, e.g. ``precision fp32 (auto: fp32 0.169 s/step, ...)``."""
        if self.seconds_per_step:
            times = ", ".join(f"{k} {v:.4g} s/step" for k, v in self.seconds_per_step.items())
            return f"precision {self.precision} (auto, measured here: {times})"
        return f"precision {self.precision} ({self.reason or self.requested})"


def check_precision(requested: str) -> str:
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {requested!r}")
    return requested


def seconds_per_step(
    make_module: Callable[[], nn.Module],
    source: BatchSource,
    cfg: TrainConfig,
    *,
    bf16: bool,
    steps: int = 5,
    warmup: int = 2,
    timer: Timer = time.perf_counter,
) -> float:
    """Median wall time of one optimizer step of a fresh ``make_module()`` trained on ``source``
    with ``cfg`` (its batch size, optimizer and device) and ``bf16`` autocast on or off.

    Runs :func:`~reasonlens.training.train` for ``warmup + steps + 1`` steps without evaluation
    or checkpoints and reads ``timer()`` each time the loop asks ``source`` for a batch, so a
    step's time is the gap between two batch requests; the first ``warmup`` gaps are dropped.
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"seconds_per_step needs steps >= 1 and warmup >= 0; got {steps}, {warmup}")
    stamps: list[float] = []

    def timed(step: int, batch_size: int) -> Batch:
        stamps.append(timer())
        return source(step, batch_size)

    n = warmup + steps + 1
    run_cfg = dataclasses.replace(
        cfg, steps=n, warmup_steps=0, eval_every=n, checkpoint_every=None, bf16=bf16, progress=False
    )
    train(make_module(), timed, run_cfg)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])][warmup:]
    return float(statistics.median(gaps))


def choose_precision(requested: str, measure: Callable[[str], float]) -> PrecisionChoice:
    """``fp32``/``bf16`` as given; ``auto``: ``measure("fp32")`` and ``measure("bf16")`` (seconds
    per step) and the faster of the two (fp32 on a tie)."""
    check_precision(requested)
    if requested != "auto":
        return PrecisionChoice(requested, requested, reason="as requested")
    times = {p: float(measure(p)) for p in ("fp32", "bf16")}
    best = "bf16" if times["bf16"] < times["fp32"] else "fp32"
    return PrecisionChoice(best, "auto", times, reason="faster here")
