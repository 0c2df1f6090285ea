"""All five stages in order, from one :class:`ICoTSetup`, cached on disk.

A setup names the operand sizes, the data sizes, one model config per model and one training config
per stage. :func:`run_stages` trains whatever is missing under ``run_dir/<stage>-<key>/`` and
reloads what is there: every stage goes through the resumable trainer, so a finished stage costs
nothing on a second call and an interrupted one continues where its last checkpoint left it. A
stage's key (:meth:`ICoTSetup.stage_keys`) hashes the data, its model and training configs and the
keys of the stages it reads from, so changing the coupling budget retrains only the coupling, and
different setups never share a checkpoint.

Presets (:func:`preset`):

- ``"cpu"``: four-layer, d_model 128 models sized for a 2-core CPU (see the experiment's help);
- ``"paper"``: GPT-2-small-shaped models (12 layers, d_model 768, 12 heads) trained from scratch
  with the authors' data sizes, batch size and learning rate; meant for a GPU and not run here;
- ``quick=True``: tiny models and a few steps, for tests.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from reasonlens.icot.internalize import RemovalSchedule
from reasonlens.icot.modules import ImplicitCoT, MindReadingStudent, ThoughtEmulator
from reasonlens.icot.running_sum import RunningSumHeads
from reasonlens.icot.stages import (
    add_teacher_states,
    answer_digit_accuracy,
    student_logits,
    train_coupled,
    train_emulator,
    train_internalized,
    train_nocot,
    train_running_sum,
    train_student,
    train_teacher,
)
from reasonlens.io import write_json
from reasonlens.models import ModelConfig, Transformer
from reasonlens.names import ICOT_ALL_STAGES
from reasonlens.names import add_stage_steps_option as add_stage_steps_option  # re-exported
from reasonlens.names import parse_stage_steps as parse_stage_steps  # re-exported
from reasonlens.tasks import multiplication as mult
from reasonlens.training import TrainConfig, TrainResult
from reasonlens.training.trainer import MODEL_FILE

MODELS: tuple[str, ...] = ("nocot", "teacher", "student", "emulator", "internalize", "aux")
ALL_STAGES: tuple[str, ...] = ICOT_ALL_STAGES  # stages.STAGES + stages.METHOD_STAGES
# what each stage reads from
UPSTREAM: dict[str, tuple[str, ...]] = {
    "nocot": (), "teacher": (), "student": ("teacher",), "emulator": ("teacher",),
    "coupled": ("student", "emulator"), "internalize": (), "aux": (),
}  # fmt: skip
SI_INITS: tuple[str, ...] = ("scratch", "teacher")


@dataclass(frozen=True)
class Method:
    """A way of answering: which stage's model answers, and how it is decoded
    (:func:`reasonlens.icot.generate_answers`)."""

    label: str
    stage: str
    decode: str


# the methods compared in results tables, in their canonical order
RESULT_METHODS: dict[str, Method] = {
    "no_cot": Method("no CoT", "nocot", "nocot"),
    "explicit_cot": Method("explicit CoT", "teacher", "cot"),
    "implicit_kd": Method("implicit CoT (distillation)", "coupled", "implicit"),
    "implicit_si": Method("stepwise internalization", "internalize", "internalized"),
    "aux_running_sum": Method("running-sum loss", "aux", "nocot"),
}
PRESETS: tuple[str, ...] = ("cpu", "paper")
AUX_WEIGHT = 30.0  # the presets' running-sum loss weight
# TrainConfig fields that do not change the trained weights, left out of the stage keys.
_NOT_IN_KEY = ("device", "progress", "desc", "eval_every", "eval_batch_size", "checkpoint_every")


@dataclass
class ICoTSetup:
    digits: tuple[int, int]
    models: dict[str, ModelConfig]
    training: dict[str, TrainConfig]
    n_train: int
    n_valid: int
    n_test: int
    n_probe: int = 0
    seed: int = 0
    preset: str = "custom"
    data: str = "generated"  # or an identifier of the files the data was read from
    # stepwise internalization: dwell steps per number of removed tokens, smoothing, start point
    si_dwell: tuple[int, ...] = ()
    si_lambda: float = 4.0
    si_init: str = "scratch"  # or "teacher": start from the trained explicit-CoT teacher
    # the auxiliary running-sum loss
    aux_weight: float = 1.0

    def __post_init__(self) -> None:
        self.digits = tuple(self.digits)  # type: ignore[assignment]
        self.si_dwell = tuple(self.si_dwell)  # type: ignore[assignment]
        self.validate()

    @property
    def si_schedule(self) -> RemovalSchedule:
        return RemovalSchedule(self.si_dwell)

    def upstream(self, stage: str) -> tuple[str, ...]:
        if stage == "internalize" and self.si_init == "teacher":
            return ("teacher",)
        return UPSTREAM[stage]

    def needed_stages(self, stages: list[str] | tuple[str, ...]) -> list[str]:
        """``stages`` and everything they read from, in training order."""
        unknown = sorted(set(stages) - set(ALL_STAGES))
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; stages are {list(ALL_STAGES)}")
        need: set[str] = set()

        def add(stage: str) -> None:
            if stage not in need:
                need.add(stage)
                for u in self.upstream(stage):
                    add(u)

        for stage in stages:
            add(stage)
        return [s for s in ALL_STAGES if s in need]

    def validate(self) -> None:
        if len(self.digits) != 2:
            raise ValueError(f"ICoTSetup.digits must be (d1, d2); got {self.digits!r}")
        mult._check_digits(*self.digits)
        missing = [m for m in MODELS if m not in self.models]
        if missing:
            raise ValueError(f"ICoTSetup.models lacks {missing}")
        missing = [s for s in ALL_STAGES if s not in self.training]
        if missing:
            raise ValueError(f"ICoTSetup.training lacks {missing}")
        for name in ("n_train", "n_valid", "n_test"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ICoTSetup.{name} must be a positive integer; got {v!r}")
        if isinstance(self.n_probe, bool) or not isinstance(self.n_probe, int) or self.n_probe < 0:
            raise ValueError(f"ICoTSetup.n_probe must be an integer >= 0; got {self.n_probe!r}")
        teacher = self.models["teacher"]
        for name in ("student", "emulator"):
            if self.models[name].n_layers != teacher.n_layers:
                raise ValueError(
                    f"ICoTSetup: the {name} has {self.models[name].n_layers} layers but the teacher has "
                    f"{teacher.n_layers}; they must match (one teacher state per block)"
                )
        if self.si_init not in SI_INITS:
            raise ValueError(f"ICoTSetup.si_init must be one of {SI_INITS}; got {self.si_init!r}")
        n_cot = mult.cot_length(*self.digits)
        if len(self.si_dwell) != n_cot:
            raise ValueError(
                f"ICoTSetup.si_dwell has {len(self.si_dwell)} entries; a {self.digits[0]}x{self.digits[1]} "
                f"chain of thought has {n_cot} tokens (one entry per number of removed tokens)"
            )
        RemovalSchedule(self.si_dwell)  # validates the entries
        if self.si_dwell and sum(self.si_dwell) >= self.training["internalize"].steps:
            raise ValueError(
                f"the removal schedule ends at step {sum(self.si_dwell)}, but the internalize stage trains "
                f"{self.training['internalize'].steps} steps: nothing would be trained without CoT"
            )
        si, teacher_cfg = self.models["internalize"], self.models["teacher"]
        if self.si_init == "teacher" and si.replace(seed=teacher_cfg.seed) != teacher_cfg:
            raise ValueError(
                "ICoTSetup: si_init='teacher' needs the internalize model's shape to equal the teacher's"
            )
        for name, v in (("si_lambda", self.si_lambda), ("aux_weight", self.aux_weight)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v != v:
                raise ValueError(f"ICoTSetup.{name} must be a number >= 0; got {v!r}")
        if self.aux_weight == float("inf"):
            raise ValueError("ICoTSetup.aux_weight must be finite")
        need = sequence_lengths(*self.digits)
        for name, fmt in (
            ("teacher", "cot"),
            ("internalize", "cot"),
            ("aux", "nocot"),
            ("nocot", "nocot"),
            ("student", "nocot"),
            ("emulator", "input"),
        ):
            if self.models[name].n_ctx < need[fmt]:
                raise ValueError(
                    f"ICoTSetup: the {name}'s n_ctx={self.models[name].n_ctx} is shorter than its "
                    f"{need[fmt]}-token {self.digits[0]}x{self.digits[1]} sequences"
                )
        for name, m in self.models.items():
            if m.d_vocab < mult.D_VOCAB:
                raise ValueError(f"ICoTSetup: the {name}'s d_vocab={m.d_vocab} < {mult.D_VOCAB} symbols")

    def to_dict(self) -> dict[str, Any]:
        return {
            "digits": list(self.digits),
            "models": {k: v.to_dict() for k, v in self.models.items()},
            "training": {k: v.to_dict() for k, v in self.training.items()},
            "n_train": self.n_train, "n_valid": self.n_valid, "n_test": self.n_test,
            "n_probe": self.n_probe, "seed": self.seed, "preset": self.preset, "data": self.data,
            "si_dwell": list(self.si_dwell), "si_lambda": self.si_lambda, "si_init": self.si_init,
            "aux_weight": self.aux_weight,
        }  # fmt: skip

    def stage_specs(self) -> dict[str, dict[str, Any]]:
        """What determines each stage's weights: the data, its model config(s), its training config
        (without device, progress and evaluation settings) and the keys of the stages it reads."""
        method_fields = ("si_dwell", "si_lambda", "si_init", "aux_weight")
        data = {
            k: v
            for k, v in self.to_dict().items()
            if k not in ("models", "training", "preset", *method_fields)
        }
        train = {
            s: {k: v for k, v in tc.to_dict().items() if k not in _NOT_IN_KEY}
            for s, tc in self.training.items()
        }
        models = {k: v.to_dict() for k, v in self.models.items()}
        specs: dict[str, dict[str, Any]] = {}
        keys: dict[str, str] = {}
        for stage in ALL_STAGES:
            spec = {
                "data": data,
                "training": train[stage],
                "upstream": {u: keys[u] for u in self.upstream(stage)},
            }
            if stage in models:
                spec["model"] = models[stage]
            if stage == "internalize":
                spec["method"] = {"si_dwell": list(self.si_dwell), "si_lambda": self.si_lambda,
                                  "si_init": self.si_init}  # fmt: skip
            if stage == "aux":
                spec["method"] = {"aux_weight": self.aux_weight}
            specs[stage] = spec
            keys[stage] = _digest(spec)
        return specs

    def stage_keys(self) -> dict[str, str]:
        """``<stage>-<hash>`` folder names, one per stage (see :meth:`stage_specs`)."""
        return {stage: f"{stage}-{_digest(spec)}" for stage, spec in self.stage_specs().items()}

    def with_device(self, device: str) -> ICoTSetup:
        return dataclasses.replace(
            self, training={k: dataclasses.replace(v, device=device) for k, v in self.training.items()}
        )

    def with_progress(self, progress: bool) -> ICoTSetup:
        return dataclasses.replace(
            self, training={k: dataclasses.replace(v, progress=progress) for k, v in self.training.items()}
        )

    def with_steps(self, steps: dict[str, int]) -> ICoTSetup:
        """A copy in which each named stage trains for the given number of steps (its stage key, and
        those of the stages reading from it, change with it)."""
        unknown = sorted(set(steps) - set(ALL_STAGES))
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; stages are {list(ALL_STAGES)}")
        for stage, n in steps.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"steps for stage {stage!r} must be a positive integer; got {n!r}")
        training = {k: dataclasses.replace(v, steps=steps.get(k, v.steps)) for k, v in self.training.items()}
        return dataclasses.replace(self, training=training)

    def with_kd_shape(self, n_layers: int, d_model: int) -> ICoTSetup:
        """A copy whose distillation chain (teacher, mind-reading student, emulator) has ``n_layers``
        blocks of width ``d_model`` (d_mlp 4 x d_model; the preset's head count where it divides
        d_model, else heads of width 32). One teacher state per block, so a deeper teacher's
        diagonal covers more of the chain of thought (issue 10, part 4). Other models keep theirs."""
        for name, v in (("n_layers", n_layers), ("d_model", d_model)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"with_kd_shape: {name} must be a positive integer; got {v!r}")
        teacher = self.models["teacher"]
        heads = teacher.n_heads if d_model % teacher.n_heads == 0 else max(1, d_model // 32)
        if d_model % heads:
            raise ValueError(f"with_kd_shape: d_model={d_model} has no head count that divides it")
        shape = dict(n_layers=n_layers, d_model=d_model, n_heads=heads, d_mlp=4 * d_model)
        models = dict(self.models)
        for name in ("teacher", "student", "emulator"):
            models[name] = models[name].replace(**shape)
        if self.si_init == "teacher":  # stepwise internalization from the teacher keeps its shape
            models["internalize"] = models["internalize"].replace(**shape)
        return dataclasses.replace(self, models=models)


def _digest(spec: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]


def sequence_lengths(d1: int, d2: int) -> dict[str, int]:
    """Token lengths of the three formats for ``d1 x d2`` products."""
    inp = d1 + 1 + d2 + 1  # input SEP
    tail = 1 + d1 + d2 + 1  # #### answer END
    return {"input": inp, "nocot": inp + tail, "cot": inp + mult.cot_length(d1, d2) + 1 + tail}


def preset(
    name: str = "cpu", digits: tuple[int, int] = (4, 4), quick: bool = False, seed: int = 0
) -> ICoTSetup:
    """A ready setup: ``"cpu"`` or ``"paper"``; ``quick`` shrinks either to a seconds-long smoke run."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}; got {name!r}")
    mult._check_digits(*digits)
    lengths = sequence_lengths(*digits)
    ctx = {"nocot": lengths["nocot"], "teacher": lengths["cot"], "student": lengths["nocot"],
           "emulator": lengths["input"], "internalize": lengths["cot"], "aux": lengths["nocot"]}  # fmt: skip
    n_cot = mult.cot_length(*digits)
    method_cfg: dict[str, dict[str, Any]] = {"internalize": {}, "aux": {}}  # per-stage TrainConfig changes
    if quick:
        shape = dict(n_layers=2, d_model=32, n_heads=2, d_mlp=64)
        shapes = {}
        schedule = RemovalSchedule.linear(n_cot, 1, warmup=2)
        steps = dict.fromkeys(ALL_STAGES, 12) | {"internalize": schedule.end + 6}
        common = dict(batch_size=16, warmup_steps=2, eval_every=6, eval_batch_size=256)
        sizes = dict(n_train=256, n_valid=32, n_test=32, n_probe=96)
        lrs = dict.fromkeys(ALL_STAGES, 3e-3)
    elif name == "cpu":
        shape = dict(n_layers=4, d_model=128, n_heads=4, d_mlp=512)
        # the running-sum loss at Bai et al.'s depth (2 layers, 4 heads): on 3x3 it jumps from ~5%
        # to 95% exact match between steps 7500 and 19000 and reaches 99% by 22500 (README)
        shapes = {"aux": dict(shape, n_layers=2)}
        schedule = RemovalSchedule.ramp(n_cot, first=50, last=400, warmup=1000)
        steps = dict(nocot=1500, teacher=1200, student=600, emulator=1500, coupled=1500,
                     internalize=schedule.end + 3000, aux=30_000)  # fmt: skip
        common = dict(
            batch_size=64, warmup_steps=100, eval_every=100, eval_batch_size=1000, checkpoint_every=200
        )
        method_cfg["internalize"] = dict(schedule="constant", weight_decay=0.0, eval_every=250)
        method_cfg["aux"] = dict(eval_every=250)
        sizes = dict(n_train=100_000, n_valid=1000, n_test=1000, n_probe=3000)
        lrs = dict(nocot=1e-3, teacher=1e-3, student=1e-3, emulator=1e-3, coupled=3e-4, internalize=1e-3,
                   aux=1e-3)  # fmt: skip
    else:  # paper: GPT-2 small shapes, the authors' data sizes, batch size, learning rate and epochs
        shape = dict(n_layers=12, d_model=768, n_heads=12, d_mlp=3072, act_fn="gelu_new",
                     attn_bias=True, mlp_bias=True)  # fmt: skip
        # Bai et al. (2025): 2 layers x 4 heads at d_model 768, from scratch, for both methods
        bai = dict(shape, n_layers=2, n_heads=4)
        shapes = {"internalize": bai, "aux": bai}
        per_epoch = 808_000 // 32
        # the authors' 8 tokens per epoch after one explicit-CoT epoch, then 4 epochs with none left
        schedule = RemovalSchedule.linear(n_cot, per_epoch // 8, warmup=per_epoch)
        steps = dict(nocot=per_epoch, teacher=per_epoch, student=40 * per_epoch, emulator=40 * per_epoch,
                     coupled=40 * per_epoch, internalize=schedule.end + 4 * per_epoch,
                     aux=1_100_000)  # fmt: skip
        common = dict(batch_size=32, warmup_steps=0, eval_every=5000, eval_batch_size=256,
                      checkpoint_every=5000, schedule="constant", weight_decay=0.0)  # fmt: skip
        sizes = dict(n_train=808_000, n_valid=1000, n_test=1000, n_probe=4000)
        lrs = dict.fromkeys(ALL_STAGES, 5e-5)
    models = {
        m: ModelConfig(d_vocab=mult.D_VOCAB, n_ctx=ctx[m], seed=seed + i, **shapes.get(m, shape))
        for i, m in enumerate(MODELS)
    }
    training = {
        s: TrainConfig(
            steps=steps[s], lr=lrs[s], min_lr=lrs[s] / 10, seed=seed, desc=s,
            **(common | method_cfg.get(s, {})),
        )
        for s in ALL_STAGES
    }  # fmt: skip
    # the running-sum loss weight (in units of TARGET_SCALE): Bai et al. do not publish theirs; on
    # 3x3 at CPU scale 30 beat 1 (README, "Stepwise internalization and the running-sum loss")
    return ICoTSetup(
        digits, models, training, seed=seed, preset=name if not quick else f"{name}-quick",
        si_dwell=schedule.dwell, aux_weight=AUX_WEIGHT, **sizes,
    )  # fmt: skip


# -- running ---------------------------------------------------------------------------------------


@dataclass
class ICoTRun:
    """Trained models by stage name (``nocot``, ``teacher``, ``student``, ``emulator`` - the
    stage-4 emulator - ``coupled``, ``internalize``, ``aux``; only the stages that were run) and
    each stage's :class:`TrainResult`."""

    setup: ICoTSetup
    splits: dict[str, mult.MultiplicationData]
    models: dict[str, nn.Module] = field(default_factory=dict)
    results: dict[str, TrainResult] = field(default_factory=dict)
    run_dir: Path | None = None

    def model_file(self, stage: str) -> Path | None:
        """The stage's saved model file, or ``None`` (trained in memory, or not saved)."""
        if self.run_dir is None:
            return None
        path = self.run_dir / self.setup.stage_keys()[stage] / MODEL_FILE
        return path if path.is_file() else None

    def identity(self, stage: str) -> str:
        """One line naming the stage's trained model for a figure: its file, the SHA-256 of its
        tensors, its transformer's variant and its training steps (see
        :func:`reasonlens.plots.common.model_identity`)."""
        from reasonlens.checkpoints import stored_sha256
        from reasonlens.plots.common import model_identity

        path = self.model_file(stage)
        model = self.models[stage]
        cfg = getattr(model, "cfg", None) if not isinstance(model, ImplicitCoT) else model.student.cfg
        result = self.results.get(stage)
        steps = result.steps_done if result is not None else None
        sha = stored_sha256(path) if path is not None else None
        return f"{stage}: " + model_identity(cfg, path, sha, steps)

    def student_digit_accuracy(self, data: mult.MultiplicationData) -> list[float]:
        """The mind-reading student's teacher-forced accuracy on each answer digit of ``data``
        (least significant first), handed the trained teacher's diagonal states: which answer digits
        those states let it read (the capacity question of a shallow teacher)."""
        missing = [s for s in ("teacher", "student") if s not in self.models]
        if missing:
            raise ValueError(
                f"the run has no trained {' or '.join(missing)} (run the implicit_kd stages first)"
            )
        batch = add_teacher_states(data.batch("nocot", teacher=True), self.models["teacher"])
        return answer_digit_accuracy(self.models["student"], batch, student_logits).tolist()

    def stage_summary(self) -> pd.DataFrame:
        """One row per stage: steps, training wall time, and its last validation metrics."""
        rows = []
        for stage, res in self.results.items():
            m = res.metrics
            last = m[(m.split == "valid") & (m.step == m.step.max())] if len(m) else m
            row = {"stage": stage, "steps": res.steps_done, "train_seconds": round(res.wall_time, 1)}
            row.update({f"valid_{r.metric}": r.value for r in last.itertuples()})
            rows.append(row)
        return pd.DataFrame(rows)


def make_data(setup: ICoTSetup) -> dict[str, mult.MultiplicationData]:
    """The setup's train/valid/test (and probe, when ``n_probe > 0``) splits, all disjoint."""
    splits = mult.make_splits(
        setup.digits, setup.n_train + setup.n_probe, setup.n_valid, setup.n_test, seed=setup.seed
    )
    if setup.n_probe:
        train = splits["train"]
        splits["probe"], splits["train"] = train[: setup.n_probe], train[setup.n_probe :]
    return splits


def run_stages(
    setup: ICoTSetup,
    splits: dict[str, mult.MultiplicationData] | None = None,
    run_dir: str | Path | None = None,
    log: Any = print,
    stages: list[str] | tuple[str, ...] | None = None,
) -> ICoTRun:
    """Train (or reload) ``stages`` (default: all of :data:`ALL_STAGES`) and the stages they read
    from, in order; ``run_dir=None`` trains in memory only."""
    todo = setup.needed_stages(ALL_STAGES if stages is None else stages)
    splits = splits if splits is not None else make_data(setup)
    out = Path(run_dir) if run_dir is not None else None
    run = ICoTRun(setup, splits, run_dir=out)
    names, specs = setup.stage_keys(), setup.stage_specs()

    def sub(stage: str) -> Path | None:
        if out is None:
            return None
        write_json(specs[stage], out / names[stage] / "stage.json")
        return out / names[stage]

    tc, mc, models = setup.training, setup.models, run.models

    def done(stage: str, model: nn.Module, res: TrainResult) -> None:
        models[stage] = model
        run.results[stage] = res
        log(f"[{stage}] {res.steps_done} steps, {res.wall_time:.0f} s of training; valid: "
            + ", ".join(f"{k}={res.final('valid', k):.4g}" for k in _metric_names(res)))  # fmt: skip

    if "nocot" in todo:
        nocot = Transformer(mc["nocot"])
        done("nocot", nocot, train_nocot(nocot, splits, tc["nocot"], sub("nocot")))
    if "teacher" in todo:
        teacher = Transformer(mc["teacher"])
        done("teacher", teacher, train_teacher(teacher, splits, tc["teacher"], sub("teacher")))
    if "student" in todo:
        d_t, n_l = models["teacher"].cfg.d_model, models["teacher"].cfg.n_layers
        student = MindReadingStudent(mc["student"], d_t, n_l)
        done(
            "student",
            student,
            train_student(student, models["teacher"], splits, tc["student"], sub("student")),
        )
    if "emulator" in todo:
        d_t, n_l = models["teacher"].cfg.d_model, models["teacher"].cfg.n_layers
        emulator = ThoughtEmulator(mc["emulator"], d_t, n_l)
        res = train_emulator(emulator, models["teacher"], splits, tc["emulator"], sub("emulator"))
        done("emulator", emulator, res)
    if "coupled" in todo:
        coupled = ImplicitCoT(copy.deepcopy(models["emulator"]), copy.deepcopy(models["student"]))
        done("coupled", coupled, train_coupled(coupled, splits, tc["coupled"], sub("coupled")))
    if "internalize" in todo:
        si = (
            copy.deepcopy(models["teacher"]) if setup.si_init == "teacher" else Transformer(mc["internalize"])
        )
        res = train_internalized(
            si, splits, tc["internalize"], setup.si_schedule, setup.si_lambda, sub("internalize")
        )
        done("internalize", si, res)
    if "aux" in todo:
        aux = RunningSumHeads(Transformer(mc["aux"]), weight=setup.aux_weight)
        done("aux", aux, train_running_sum(aux, splits, tc["aux"], sub("aux")))
    for model in models.values():
        model.eval()
    return run


def stage_lanes(setup: ICoTSetup, stages: list[str] | tuple[str, ...] | None = None) -> list[list[str]]:
    """The stages ``stages`` need (default: all), split into independent lanes: the connected
    components of the reads-from graph (the distillation chain is one lane; no-CoT, stepwise
    internalization from scratch and the running-sum model are one each). Longest lane first, by
    a rough cost (steps x layers x d_model x context length), so a pool starts the long ones first."""
    todo = setup.needed_stages(ALL_STAGES if stages is None else stages)
    lane_of: dict[str, int] = {}
    lanes: list[set[str]] = []
    for stage in todo:  # training order: a stage's upstream stages come before it
        joined = {lane_of[u] for u in setup.upstream(stage) if u in lane_of}
        merged = set().union(*(lanes[i] for i in joined)) | {stage}
        for i in joined:
            lanes[i] = set()
        lanes.append(merged)
        for st in merged:
            lane_of[st] = len(lanes) - 1
    model_of = {"coupled": "emulator"}  # the coupled model's cost is dominated by its emulator

    def cost(stage: str) -> float:
        cfg = setup.models.get(model_of.get(stage, stage), setup.models["teacher"])
        return setup.training[stage].steps * cfg.n_layers * cfg.d_model * cfg.n_ctx

    out = [[s for s in todo if s in lane] for lane in lanes if lane]
    return sorted(out, key=lambda lane: -sum(cost(s) for s in lane))


def _train_lane(item: tuple[ICoTSetup, dict[str, mult.MultiplicationData], Path, list[str]]) -> list[str]:
    setup, splits, run_dir, lane = item  # a worker: train the lane's stages into their checkpoints
    run_stages(setup.with_progress(False), splits, run_dir, log=lambda _msg: None, stages=lane)
    return lane


def run_stages_parallel(
    setup: ICoTSetup,
    splits: dict[str, mult.MultiplicationData],
    run_dir: str | Path,
    backend: Any,
    log: Any = print,
    stages: list[str] | tuple[str, ...] | None = None,
    progress: bool = True,
) -> ICoTRun:
    """:func:`run_stages` with the independent lanes (:func:`stage_lanes`) trained side by side on
    ``backend`` (a :class:`reasonlens.training.grid.Backend`: local worker processes or Ray), then
    every stage reloaded here from its checkpoint. Each stage trains exactly as it would alone
    (same seeds, same data), on ``backend``'s thread count. A lane that fails raises, naming it."""
    from reasonlens.training.grid import run_tasks

    lanes = stage_lanes(setup, stages)
    if len(lanes) > 1 and (backend.workers > 1 or backend.ray is not None):
        out = Path(run_dir)
        names = ["+".join(lane) for lane in lanes]
        log(f"training {len(lanes)} independent lanes on {backend.describe()}: {', '.join(names)}")
        _, failures = run_tasks(
            _train_lane, [(setup, splits, out, lane) for lane in lanes], names, backend, progress=progress
        )
        if failures:
            raise RuntimeError("; ".join(f"lane {name} failed: {err}" for name, err in failures.items()))
    return run_stages(setup, splits, run_dir, log=log, stages=stages)


def _metric_names(res: TrainResult) -> list[str]:
    m = res.metrics
    return sorted(m[m.split == "valid"].metric.unique()) if len(m) else []
