"""Decompositional distillation (Shridhar, Stolfo and Sachan 2023): a decomposer that asks the
sub-questions and a solver that answers them in turn, against a CoT solver of the same size."""

from reasonlens.decompose.formats import MODELS, make_batch, sequence, tokenizer_for
from reasonlens.decompose.pipeline import (
    ANSWER_METHODS,
    METHODS,
    PRESETS,
    DecomposeConfig,
    cot_answers,
    decompose,
    evaluate,
    make_data,
    run_seed,
    solve,
    train_model,
)

__all__ = [
    "ANSWER_METHODS", "METHODS", "MODELS", "PRESETS", "DecomposeConfig", "cot_answers", "decompose",
    "evaluate", "make_batch", "make_data", "run_seed", "sequence", "solve", "tokenizer_for", "train_model",
]  # fmt: skip
