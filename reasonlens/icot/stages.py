"""The five training stages, each a loss function and a batch source for the one training loop.

1. :func:`train_nocot` - baseline on ``input SEP #### answer END``.
2. :func:`train_teacher` - explicit chain of thought, ``input SEP cot SEP #### answer END``.
3. :func:`train_student` - mind-reading student: answer loss, teacher states at the separator.
4. :func:`train_emulator` - thought emulator: ``sum_l 0.5 * ||teacher_l - predicted_l||^2``.
5. :func:`train_coupled` - emulator feeding student, both trained on the answer loss only.

Every stage goes through :func:`reasonlens.training.train`, so with an ``out_dir`` it checkpoints,
resumes exactly after an interruption, and a finished stage re-run with the same settings is a
no-op that hands back the trained weights (the cache). Teacher states are computed on the fly by a
batch source wrapper (:class:`WithTeacherStates`), a pure function of the step like any source.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from reasonlens.icot.internalize import InternalizationSource, RemovalSchedule, final_format
from reasonlens.icot.modules import ImplicitCoT, MindReadingStudent, ThoughtEmulator
from reasonlens.icot.running_sum import (
    RunningSumHeads,
    add_running_sums,
    evaluate_running_sum,
    running_sum_loss,
)
from reasonlens.icot.states import teacher_states
from reasonlens.models import Transformer
from reasonlens.names import ICOT_METHOD_STAGES, ICOT_STAGES
from reasonlens.tasks.batch import Batch
from reasonlens.tasks.multiplication import MultiplicationData
from reasonlens.training import (
    BatchSource,
    FixedSource,
    TrainConfig,
    TrainResult,
    evaluate_lm,
    masked_lm_loss,
    train,
)

LogitsFn = Callable[[nn.Module, Batch], Tensor]
STAGES: tuple[str, ...] = ICOT_STAGES
METHOD_STAGES: tuple[str, ...] = ICOT_METHOD_STAGES


# -- losses and metrics ------------------------------------------------------------------------------


def masked_cross_entropy(logits: Float[Tensor, "batch pos vocab"], batch: Batch) -> Float[Tensor, ""]:
    """Mean next-token cross-entropy over the positions where ``batch.mask`` is True."""
    return F.cross_entropy(logits[batch.mask].float(), batch.targets[batch.mask])


def student_logits(student: MindReadingStudent, batch: Batch) -> Tensor:
    return student(batch.inputs, batch.extra["teacher_states"], batch.extra["sep"])


def coupled_logits(model: ImplicitCoT, batch: Batch) -> Tensor:
    return model(batch.inputs, batch.extra["sep"])


def student_loss(student: MindReadingStudent, batch: Batch) -> Tensor:
    return masked_cross_entropy(student_logits(student, batch), batch)


def coupled_loss(model: ImplicitCoT, batch: Batch) -> Tensor:
    return masked_cross_entropy(coupled_logits(model, batch), batch)


def emulation_error(
    predicted: Float[Tensor, "batch n_layers d"], target: Float[Tensor, "batch n_layers d"]
) -> Float[Tensor, " batch"]:
    """``sum_l 0.5 * ||target_l - predicted_l||^2`` per example."""
    return 0.5 * (target.float() - predicted.float()).pow(2).sum(dim=(1, 2))


def emulator_loss(emulator: ThoughtEmulator, batch: Batch) -> Tensor:
    return emulation_error(emulator(batch.inputs, batch.extra["sep"]), batch.extra["teacher_states"]).mean()


def lm_evaluator(logits_fn: LogitsFn) -> Callable[[nn.Module, Batch, int], dict[str, float]]:
    """An ``eval_fn`` for the trainer: masked loss, token accuracy, and ``accuracy`` (every masked
    token right under teacher forcing; for answer-only models this equals greedy exact match)."""

    def evaluate(module: nn.Module, batch: Batch, batch_size: int) -> dict[str, float]:
        return evaluate_lm(module, batch, batch_size, logits_fn)

    return evaluate


@torch.no_grad()
def answer_digit_accuracy(
    module: nn.Module, batch: Batch, logits_fn: LogitsFn, batch_size: int = 1024
) -> Float[Tensor, " width"]:
    """Teacher-forced accuracy of each answer digit, least significant first, on a batch of the
    ``nocot`` format (``MultiplicationData.batch("nocot", ...)``; add ``teacher_states`` for the
    student). Digit ``k``'s prediction is read at position ``sep + 1 + k`` (the ``####`` token's
    successor onwards); examples with shorter answers count only for the positions they have."""
    if "sep" not in batch.extra or "length" not in batch.extra:
        raise ValueError(
            "the batch has no extra['sep'] / extra['length']: build it with MultiplicationData.batch"
        )
    widths = batch.extra["length"] - batch.extra["sep"] - 3  # [batch]: answer digits per example
    width = int(widths.max())
    right, total = torch.zeros(width), torch.zeros(width)
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    offsets = torch.arange(width)
    for i in range(0, len(batch), batch_size):
        b = batch[i : i + batch_size].to(device)
        pred = logits_fn(module, b).argmax(-1).cpu()  # [b, pos]
        pos = (b.extra["sep"].cpu()[:, None] + 1 + offsets).clamp_max(pred.shape[1] - 1)  # [b, width]
        have = offsets[None, :] < widths[i : i + batch_size, None]
        ok = (pred.gather(1, pos) == b.targets.cpu().gather(1, pos)) & have
        right += ok.sum(0)
        total += have.sum(0)
    module.train(was_training)
    return right / total.clamp_min(1)


@torch.no_grad()
def evaluate_emulator(emulator: ThoughtEmulator, batch: Batch, batch_size: int) -> dict[str, float]:
    """The emulation loss and the fraction of the teacher states' variance it leaves unexplained
    (``1 - R^2`` pooled over layers and dimensions)."""
    was_training = emulator.training
    emulator.eval()
    device = next(emulator.parameters()).device
    preds = []
    for i in range(0, len(batch), batch_size):
        b = batch[i : i + batch_size].to(device)
        preds.append(emulator(b.inputs, b.extra["sep"]).cpu())
    emulator.train(was_training)
    pred = torch.cat(preds)
    target = batch.extra["teacher_states"].float().cpu()
    resid = (target - pred).pow(2).sum()
    total = (target - target.mean(0, keepdim=True)).pow(2).sum()
    return {
        "loss": float(emulation_error(pred, target).mean()),
        "fraction_unexplained": float(resid / total.clamp_min(1e-12)),
    }


# -- teacher states as part of the batch ---------------------------------------------------------


@torch.no_grad()
def add_teacher_states(batch: Batch, teacher: Transformer, batch_size: int = 1024) -> Batch:
    """``batch`` with ``extra["teacher_states"]`` ``[batch, n_layers, d_model]`` (on the CPU),
    computed from ``extra["teacher_tokens"]`` and the separators there."""
    for key in ("teacher_tokens", "teacher_sep1", "teacher_sep2"):
        if key not in batch.extra:
            raise ValueError(
                f"the batch has no extra[{key!r}]: build it with MultiplicationData.batch(..., teacher=True)"
            )
    states = []
    for i in range(0, len(batch), batch_size):
        sl = slice(i, i + batch_size)
        states.append(
            teacher_states(
                teacher,
                batch.extra["teacher_tokens"][sl],
                batch.extra["teacher_sep1"][sl],
                batch.extra["teacher_sep2"][sl],
            ).to(batch.inputs.device)
        )
    return Batch(
        batch.inputs, batch.targets, batch.mask, {**batch.extra, "teacher_states": torch.cat(states)}
    )


class WithTeacherStates:
    """A batch source that adds the (frozen) teacher's diagonal states to every batch of ``source``."""

    def __init__(self, source: BatchSource, teacher: Transformer):
        self.source = source
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def __call__(self, step: int, batch_size: int) -> Batch:
        return add_teacher_states(self.source(step, batch_size), self.teacher, batch_size)


# -- the stages ------------------------------------------------------------------------------------


def _check_splits(splits: Mapping[str, MultiplicationData]) -> None:
    missing = [s for s in ("train", "valid") if s not in splits]
    if missing:
        raise ValueError(f"splits needs 'train' and 'valid' MultiplicationData; missing {missing}")


def _frozen_teacher(teacher: Transformer, device: torch.device) -> Transformer:
    teacher = teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def train_nocot(
    model: Transformer, splits: Mapping[str, MultiplicationData], cfg: TrainConfig,
    out_dir: str | Path | None = None, resume: bool = True,
) -> TrainResult:  # fmt: skip
    """Stage 1: the baseline, trained on ``input SEP #### answer END`` (loss on the answer)."""
    _check_splits(splits)
    source = FixedSource(splits["train"].batch("nocot"), seed=cfg.seed)
    evals = {"valid": splits["valid"].batch("nocot")}
    return train(model, source, cfg, evals, masked_lm_loss, lm_evaluator(_plain_logits), out_dir, resume)


def train_teacher(
    model: Transformer, splits: Mapping[str, MultiplicationData], cfg: TrainConfig,
    out_dir: str | Path | None = None, resume: bool = True,
) -> TrainResult:  # fmt: skip
    """Stage 2: the teacher, trained on the explicit chain of thought and the answer."""
    _check_splits(splits)
    source = FixedSource(splits["train"].batch("cot"), seed=cfg.seed)
    evals = {"valid": splits["valid"].batch("cot")}
    return train(model, source, cfg, evals, masked_lm_loss, lm_evaluator(_plain_logits), out_dir, resume)


def train_student(
    student: MindReadingStudent, teacher: Transformer, splits: Mapping[str, MultiplicationData],
    cfg: TrainConfig, out_dir: str | Path | None = None, resume: bool = True,
) -> TrainResult:  # fmt: skip
    """Stage 3: the mind-reading student, on the answer loss with the teacher's states written in."""
    _check_splits(splits)
    _check_pair("student", student.cfg.n_layers, student.teacher_d_model, teacher)
    teacher = _frozen_teacher(teacher, cfg.resolved_device())
    source = WithTeacherStates(
        FixedSource(splits["train"].batch("nocot", teacher=True), seed=cfg.seed), teacher
    )
    evals = {"valid": add_teacher_states(splits["valid"].batch("nocot", teacher=True), teacher)}
    return train(student, source, cfg, evals, student_loss, lm_evaluator(student_logits), out_dir, resume)


def train_emulator(
    emulator: ThoughtEmulator, teacher: Transformer, splits: Mapping[str, MultiplicationData],
    cfg: TrainConfig, out_dir: str | Path | None = None, resume: bool = True,
) -> TrainResult:  # fmt: skip
    """Stage 4: the thought emulator, reading the input only, regressing the teacher's states."""
    _check_splits(splits)
    _check_pair("emulator", emulator.cfg.n_layers, emulator.teacher_d_model, teacher)
    teacher = _frozen_teacher(teacher, cfg.resolved_device())
    source = WithTeacherStates(
        FixedSource(splits["train"].batch("input", teacher=True), seed=cfg.seed), teacher
    )
    evals = {"valid": add_teacher_states(splits["valid"].batch("input", teacher=True), teacher)}
    return train(emulator, source, cfg, evals, emulator_loss, evaluate_emulator, out_dir, resume)


def train_coupled(
    model: ImplicitCoT, splits: Mapping[str, MultiplicationData], cfg: TrainConfig,
    out_dir: str | Path | None = None, resume: bool = True,
) -> TrainResult:  # fmt: skip
    """Stage 5: emulator and student trained together on the answer loss; no CoT, no teacher."""
    _check_splits(splits)
    source = FixedSource(splits["train"].batch("nocot"), seed=cfg.seed)
    evals = {"valid": splits["valid"].batch("nocot")}
    return train(model, source, cfg, evals, coupled_loss, lm_evaluator(coupled_logits), out_dir, resume)


def train_internalized(
    model: Transformer, splits: Mapping[str, MultiplicationData], cfg: TrainConfig,
    schedule: RemovalSchedule, lam: float = 4.0, out_dir: str | Path | None = None, resume: bool = True,
) -> TrainResult:  # fmt: skip
    """Stepwise internalization: explicit-CoT training with ``schedule.removed_at(step)`` CoT
    tokens removed from the left (plus smoothing ``lam``), a fresh optimizer at every removal.
    ``model`` may be fresh or a trained teacher (copy it first: it is trained in place).
    Validation is on the final format, ``input SEP SEP #### answer END``, so its ``accuracy`` is
    the greedy exact match of the model with no CoT tokens left."""
    _check_splits(splits)
    if model.cfg.n_ctx < splits["train"].max_len:
        raise ValueError(
            f"the model's n_ctx={model.cfg.n_ctx} is shorter than the {splits['train'].max_len}-token "
            "explicit-CoT sequences it starts on"
        )
    source = InternalizationSource(splits["train"], schedule, lam=lam, seed=cfg.seed)
    evals = {"valid": final_format(splits["valid"])}
    return train(
        model, source, cfg, evals, masked_lm_loss, lm_evaluator(_plain_logits), out_dir, resume,
        reset_optimizer_at=schedule.is_removal_step,
    )  # fmt: skip


def train_running_sum(
    module: RunningSumHeads, splits: Mapping[str, MultiplicationData], cfg: TrainConfig,
    out_dir: str | Path | None = None, resume: bool = True,
) -> TrainResult:  # fmt: skip
    """Standard training on ``input SEP #### answer END`` plus the auxiliary running-sum loss."""
    _check_splits(splits)
    train_batch = add_running_sums(splits["train"].batch("nocot"), splits["train"])
    source = FixedSource(train_batch, seed=cfg.seed)
    evals = {"valid": add_running_sums(splits["valid"].batch("nocot"), splits["valid"])}
    return train(module, source, cfg, evals, running_sum_loss, evaluate_running_sum, out_dir, resume)


def _plain_logits(model: nn.Module, batch: Batch) -> Tensor:
    return model(batch.inputs)


def _check_pair(kind: str, n_layers: int, d_teacher: int, teacher: Transformer) -> None:
    if n_layers != teacher.cfg.n_layers or d_teacher != teacher.cfg.d_model:
        raise ValueError(
            f"the {kind} expects a teacher with {n_layers} layers and d_model={d_teacher}; "
            f"this teacher has {teacher.cfg.n_layers} layers and d_model={teacher.cfg.d_model}"
        )
