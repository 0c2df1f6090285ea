"""Implicit chain of thought on multi-digit multiplication, with reasonlens hooked transformers.

Three ways of teaching a model to answer without writing its chain of thought:

- knowledge distillation (Deng et al. 2023; :mod:`~reasonlens.icot.stages`): a teacher on the
  explicit chain of thought, a mind-reading student that reads the teacher's diagonal states, a
  thought emulator that predicts those states from the input alone, and the two coupled;
- stepwise internalization (Deng, Choi and Shieber 2024; :mod:`~reasonlens.icot.internalize`):
  explicit-CoT training with the chain's tokens removed from the left on a schedule;
- the auxiliary running-sum loss (Bai et al. 2025; :mod:`~reasonlens.icot.running_sum`).

:mod:`~reasonlens.icot.pipeline` runs the stages in order, cached on disk;
:mod:`~reasonlens.icot.evaluate` decodes and grades; :mod:`~reasonlens.icot.probing` fits the
linear probes used on the emulated states.
"""

from reasonlens.icot.evaluate import METHODS, GenerationResult, answer_of, generate_answers
from reasonlens.icot.internalize import (
    InternalizationSource,
    RemovalSchedule,
    final_format,
    remove_cot_tokens,
    smoothing_offsets,
    smoothing_probabilities,
)
from reasonlens.icot.modules import ImplicitCoT, MindReadingStudent, ThoughtEmulator
from reasonlens.icot.pipeline import (
    ALL_STAGES,
    RESULT_METHODS,
    ICoTRun,
    ICoTSetup,
    Method,
    add_stage_steps_option,
    make_data,
    parse_stage_steps,
    preset,
    run_stages,
    run_stages_parallel,
    sequence_lengths,
    stage_lanes,
)
from reasonlens.icot.running_sum import RunningSumHeads, add_running_sums, running_sums
from reasonlens.icot.stages import (
    STAGES,
    WithTeacherStates,
    add_teacher_states,
    emulator_loss,
    train_coupled,
    train_emulator,
    train_internalized,
    train_nocot,
    train_running_sum,
    train_student,
    train_teacher,
)
from reasonlens.icot.states import diagonal_positions, normalize, substitution_hooks, teacher_states

__all__ = [
    "ALL_STAGES", "METHODS", "RESULT_METHODS", "STAGES", "GenerationResult", "ICoTRun", "ICoTSetup",
    "ImplicitCoT", "InternalizationSource", "Method", "MindReadingStudent", "RemovalSchedule",
    "RunningSumHeads", "ThoughtEmulator", "WithTeacherStates", "add_running_sums",
    "add_stage_steps_option", "add_teacher_states", "answer_of", "diagonal_positions", "emulator_loss",
    "final_format", "generate_answers", "make_data", "normalize", "parse_stage_steps", "preset",
    "remove_cot_tokens", "run_stages", "run_stages_parallel", "running_sums", "sequence_lengths",
    "smoothing_offsets", "stage_lanes",
    "smoothing_probabilities", "substitution_hooks", "teacher_states", "train_coupled",
    "train_emulator", "train_internalized", "train_nocot", "train_running_sum", "train_student",
    "train_teacher",
]  # fmt: skip
