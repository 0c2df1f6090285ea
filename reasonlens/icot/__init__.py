"""Implicit chain of thought (Deng et al. 2023) with reasonlens hooked transformers.

Stages (:mod:`~reasonlens.icot.stages`): a no-CoT baseline, a teacher on the explicit chain of
thought, a mind-reading student that reads the teacher's diagonal states, a thought emulator that
predicts those states from the input alone, and the emulator and student coupled and trained on the
answer. :mod:`~reasonlens.icot.pipeline` runs them in order, cached on disk;
:mod:`~reasonlens.icot.evaluate` decodes and grades; :mod:`~reasonlens.icot.probing` fits the
linear probes used on the emulated states.
"""

from reasonlens.icot.evaluate import METHODS, GenerationResult, answer_of, generate_answers
from reasonlens.icot.modules import ImplicitCoT, MindReadingStudent, ThoughtEmulator
from reasonlens.icot.pipeline import (
    ICoTRun,
    ICoTSetup,
    add_stage_steps_option,
    make_data,
    parse_stage_steps,
    preset,
    run_stages,
    sequence_lengths,
)
from reasonlens.icot.stages import (
    STAGES,
    WithTeacherStates,
    add_teacher_states,
    emulator_loss,
    train_coupled,
    train_emulator,
    train_nocot,
    train_student,
    train_teacher,
)
from reasonlens.icot.states import diagonal_positions, normalize, substitution_hooks, teacher_states

__all__ = [
    "METHODS", "STAGES", "GenerationResult", "ICoTRun", "ICoTSetup", "ImplicitCoT", "MindReadingStudent",
    "ThoughtEmulator", "WithTeacherStates", "add_stage_steps_option", "add_teacher_states", "answer_of",
    "diagonal_positions",
    "emulator_loss", "generate_answers", "make_data", "normalize", "parse_stage_steps", "preset",
    "run_stages", "sequence_lengths", "substitution_hooks", "teacher_states", "train_coupled",
    "train_emulator", "train_nocot", "train_student", "train_teacher",
]  # fmt: skip
