"""Names the scripts need while they parse their arguments, in one stdlib-only place.

``reasonlens.models`` and ``reasonlens.icot`` import torch (and TransformerLens) when imported, so a
script's ``--help`` cannot read these constants from there without waiting for them. The heavy
modules import them from here (one source of truth; tests/test_names.py checks they agree).
"""

from __future__ import annotations

import argparse
from pathlib import Path

# attention-noise variants (reasonlens.models.config.ModelConfig.noise)
NOISES: tuple[str, ...] = ("none", "fixed", "learned", "identity")

# implicit-CoT stages (reasonlens.icot.stages / reasonlens.icot.pipeline)
ICOT_STAGES: tuple[str, ...] = ("nocot", "teacher", "student", "emulator", "coupled")
ICOT_METHOD_STAGES: tuple[str, ...] = ("internalize", "aux")
ICOT_ALL_STAGES: tuple[str, ...] = ICOT_STAGES + ICOT_METHOD_STAGES
# the methods compared in results tables, in their canonical order (keys of
# reasonlens.icot.pipeline.RESULT_METHODS)
ICOT_RESULT_METHODS: tuple[str, ...] = (
    "no_cot", "explicit_cot", "implicit_kd", "implicit_si", "aux_running_sum",
)  # fmt: skip


def add_stage_steps_option(parser: argparse.ArgumentParser) -> None:
    """The scripts' ``--stage-steps STAGE=N ...`` option (read it with :func:`parse_stage_steps`)."""
    parser.add_argument(
        "--stage-steps", nargs="+", metavar="STAGE=N",
        help="train these stages for N steps instead of the preset's, e.g. student=2400 (stages: "
        f"{' '.join(ICOT_ALL_STAGES)}; downstream stages retrain with them)",
    )  # fmt: skip


def parse_stage_steps(items: list[str] | None) -> dict[str, int]:
    """``["student=2400", "coupled=3000"]`` -> ``{"student": 2400, "coupled": 3000}``, or a
    ValueError naming the bad item (the form of the scripts' ``--stage-steps`` option)."""
    steps: dict[str, int] = {}
    for item in items or ():
        stage, sep, n = item.partition("=")
        if not sep or stage not in ICOT_ALL_STAGES:
            raise ValueError(
                f"--stage-steps: expected STAGE=N with STAGE one of {list(ICOT_ALL_STAGES)}; got {item!r}"
            )
        try:
            steps[stage] = int(n)
        except ValueError:
            raise ValueError(f"--stage-steps: {item!r}: {n!r} is not an integer") from None
        if steps[stage] < 1:
            raise ValueError(f"--stage-steps: {item!r}: steps must be >= 1")
    return steps


def kd_shape(text: str) -> tuple[int, int]:
    """``"12x64"`` -> ``(12, 64)``: the ``--kd-shape LAYERSxWIDTH`` option's type (an argparse error
    naming the text otherwise)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected LAYERSxWIDTH such as 12x64; got {text!r}")
    return int(parts[0]), int(parts[1])


def add_kd_shape_option(parser: argparse.ArgumentParser) -> None:
    """The scripts' ``--kd-shape LAYERSxWIDTH`` option (``ICoTSetup.with_kd_shape``)."""
    parser.add_argument(
        "--kd-shape", type=kd_shape, default=None, metavar="LAYERSxWIDTH",
        help="shape of the distillation chain (teacher, student, emulator), e.g. 12x64: 12 blocks of "
        "d_model 64, so the teacher's diagonal states cover more of the CoT (default: the preset's)",
    )  # fmt: skip


ICOT_RUNS = Path("figures/implicit_cot/runs")  # where experiments/implicit_cot.py keeps its checkpoints
ICOT_QUICK_RUNS = Path("figures/implicit_cot/quick/runs")


def icot_analysis_folders(
    out: Path | None, runs: Path | None, quick: bool, default_out: Path
) -> tuple[Path, Path]:
    """``(out, runs)`` of a script analysing implicit_cot.py's models: ``--runs`` as given; else
    ``OUT/runs`` when ``--out`` is given (nothing written outside it); else implicit_cot.py's own
    checkpoints (reused). ``out`` defaults to ``default_out`` (``/quick`` with ``--quick``)."""
    if runs is None:
        runs = out / "runs" if out is not None else ICOT_QUICK_RUNS if quick else ICOT_RUNS
    if out is None:
        out = default_out / "quick" if quick else default_out
    return out, runs
