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

import argparse
import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from reasonlens.icot.modules import ImplicitCoT, MindReadingStudent, ThoughtEmulator
from reasonlens.icot.stages import (
    STAGES,
    train_coupled,
    train_emulator,
    train_nocot,
    train_student,
    train_teacher,
)
from reasonlens.io import write_json
from reasonlens.models import ModelConfig, Transformer
from reasonlens.tasks import multiplication as mult
from reasonlens.training import TrainConfig, TrainResult

MODELS: tuple[str, ...] = ("nocot", "teacher", "student", "emulator")
PRESETS: tuple[str, ...] = ("cpu", "paper")
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

    def __post_init__(self) -> None:
        self.digits = tuple(self.digits)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        if len(self.digits) != 2:
            raise ValueError(f"ICoTSetup.digits must be (d1, d2); got {self.digits!r}")
        mult._check_digits(*self.digits)
        missing = [m for m in MODELS if m not in self.models]
        if missing:
            raise ValueError(f"ICoTSetup.models lacks {missing}")
        missing = [s for s in STAGES if s not in self.training]
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
        need = sequence_lengths(*self.digits)
        for name, fmt in (
            ("teacher", "cot"),
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
        }  # fmt: skip

    def stage_specs(self) -> dict[str, dict[str, Any]]:
        """What determines each stage's weights: the data, its model config(s), its training config
        (without device, progress and evaluation settings) and the keys of the stages it reads."""
        data = {k: v for k, v in self.to_dict().items() if k not in ("models", "training", "preset")}
        train = {
            s: {k: v for k, v in tc.to_dict().items() if k not in _NOT_IN_KEY}
            for s, tc in self.training.items()
        }
        models = {k: v.to_dict() for k, v in self.models.items()}
        specs: dict[str, dict[str, Any]] = {}
        keys: dict[str, str] = {}
        upstream = {"nocot": [], "teacher": [], "student": ["teacher"], "emulator": ["teacher"],
                    "coupled": ["student", "emulator"]}  # fmt: skip
        for stage in STAGES:
            spec = {"data": data, "training": train[stage], "upstream": {u: keys[u] for u in upstream[stage]}}
            if stage in models:
                spec["model"] = models[stage]
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
        unknown = sorted(set(steps) - set(STAGES))
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; stages are {list(STAGES)}")
        for stage, n in steps.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"steps for stage {stage!r} must be a positive integer; got {n!r}")
        training = {k: dataclasses.replace(v, steps=steps.get(k, v.steps)) for k, v in self.training.items()}
        return dataclasses.replace(self, training=training)


def add_stage_steps_option(parser: argparse.ArgumentParser) -> None:
    """The scripts' ``--stage-steps STAGE=N ...`` option (read it with :func:`parse_stage_steps`)."""
    parser.add_argument(
        "--stage-steps", nargs="+", metavar="STAGE=N",
        help="train these stages for N steps instead of the preset's, e.g. student=2400 (stages: "
        f"{' '.join(STAGES)}; downstream stages retrain with them)",
    )  # fmt: skip


def parse_stage_steps(items: list[str] | None) -> dict[str, int]:
    """``["student=2400", "coupled=3000"]`` -> ``{"student": 2400, "coupled": 3000}``, or a
    ValueError naming the bad item (the form of the scripts' ``--stage-steps`` option)."""
    steps: dict[str, int] = {}
    for item in items or ():
        stage, sep, n = item.partition("=")
        if not sep or stage not in STAGES:
            raise ValueError(
                f"--stage-steps: expected STAGE=N with STAGE one of {list(STAGES)}; got {item!r}"
            )
        try:
            steps[stage] = int(n)
        except ValueError:
            raise ValueError(f"--stage-steps: {item!r}: {n!r} is not an integer") from None
        if steps[stage] < 1:
            raise ValueError(f"--stage-steps: {item!r}: steps must be >= 1")
    return steps


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
           "emulator": lengths["input"]}  # fmt: skip
    if quick:
        shape = dict(n_layers=2, d_model=32, n_heads=2, d_mlp=64)
        steps = dict.fromkeys(STAGES, 12)
        common = dict(batch_size=16, warmup_steps=2, eval_every=6, eval_batch_size=256)
        sizes = dict(n_train=256, n_valid=32, n_test=32, n_probe=96)
        lrs = dict.fromkeys(STAGES, 3e-3)
    elif name == "cpu":
        shape = dict(n_layers=4, d_model=128, n_heads=4, d_mlp=512)
        steps = dict(nocot=1500, teacher=1200, student=600, emulator=1500, coupled=1500)
        common = dict(
            batch_size=64, warmup_steps=100, eval_every=100, eval_batch_size=1000, checkpoint_every=200
        )
        sizes = dict(n_train=100_000, n_valid=1000, n_test=1000, n_probe=3000)
        lrs = dict(nocot=1e-3, teacher=1e-3, student=1e-3, emulator=1e-3, coupled=3e-4)
    else:  # paper: GPT-2 small shapes, the authors' data sizes, batch size, learning rate and epochs
        shape = dict(n_layers=12, d_model=768, n_heads=12, d_mlp=3072, act_fn="gelu_new",
                     attn_bias=True, mlp_bias=True)  # fmt: skip
        per_epoch = 808_000 // 32
        steps = dict(nocot=per_epoch, teacher=per_epoch, student=40 * per_epoch, emulator=40 * per_epoch,
                     coupled=40 * per_epoch)  # fmt: skip
        common = dict(batch_size=32, warmup_steps=0, eval_every=5000, eval_batch_size=256,
                      checkpoint_every=5000, schedule="constant", weight_decay=0.0)  # fmt: skip
        sizes = dict(n_train=808_000, n_valid=1000, n_test=1000, n_probe=4000)
        lrs = dict.fromkeys(STAGES, 5e-5)
    models = {
        m: ModelConfig(d_vocab=mult.D_VOCAB, n_ctx=ctx[m], seed=seed + i, **shape)
        for i, m in enumerate(MODELS)
    }
    training = {
        s: TrainConfig(steps=steps[s], lr=lrs[s], min_lr=lrs[s] / 10, seed=seed, desc=s, **common)
        for s in STAGES
    }
    return ICoTSetup(
        digits, models, training, seed=seed, preset=name if not quick else f"{name}-quick", **sizes
    )


# -- running ---------------------------------------------------------------------------------------


@dataclass
class ICoTRun:
    """Trained models (``nocot``, ``teacher``, ``student``, ``emulator`` - the stage-4 emulator -
    and ``coupled``) and each stage's :class:`TrainResult`."""

    setup: ICoTSetup
    splits: dict[str, mult.MultiplicationData]
    models: dict[str, nn.Module] = field(default_factory=dict)
    results: dict[str, TrainResult] = field(default_factory=dict)
    run_dir: Path | None = None

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
) -> ICoTRun:
    """Train (or reload) the five stages in order; ``run_dir=None`` trains in memory only."""
    splits = splits if splits is not None else make_data(setup)
    out = Path(run_dir) if run_dir is not None else None
    run = ICoTRun(setup, splits, run_dir=out)
    names, specs = setup.stage_keys(), setup.stage_specs()

    def sub(stage: str) -> Path | None:
        if out is None:
            return None
        write_json(specs[stage], out / names[stage] / "stage.json")
        return out / names[stage]

    tc, mc = setup.training, setup.models

    def done(stage: str, res: TrainResult) -> None:
        run.results[stage] = res
        log(f"[{stage}] {res.steps_done} steps, {res.wall_time:.0f} s of training; valid: "
            + ", ".join(f"{k}={res.final('valid', k):.4g}" for k in _metric_names(res)))  # fmt: skip

    nocot = Transformer(mc["nocot"])
    done("nocot", train_nocot(nocot, splits, tc["nocot"], sub("nocot")))
    teacher = Transformer(mc["teacher"])
    done("teacher", train_teacher(teacher, splits, tc["teacher"], sub("teacher")))
    d_t, n_l = teacher.cfg.d_model, teacher.cfg.n_layers
    student = MindReadingStudent(mc["student"], d_t, n_l)
    done("student", train_student(student, teacher, splits, tc["student"], sub("student")))
    emulator = ThoughtEmulator(mc["emulator"], d_t, n_l)
    done("emulator", train_emulator(emulator, teacher, splits, tc["emulator"], sub("emulator")))
    coupled = ImplicitCoT(copy.deepcopy(emulator), copy.deepcopy(student))
    done("coupled", train_coupled(coupled, splits, tc["coupled"], sub("coupled")))
    run.models = {
        "nocot": nocot,
        "teacher": teacher,
        "student": student,
        "emulator": emulator,
        "coupled": coupled,
    }
    for model in run.models.values():
        model.eval()
    return run


def _metric_names(res: TrainResult) -> list[str]:
    m = res.metrics
    return sorted(m[m.split == "valid"].metric.unique()) if len(m) else []
