"""One training loop for every model in the project.

Models differ by a loss function and a batch source, not by a copied loop: the plain language
model, a teacher, a student or an emulator all go through :func:`train`. The loop does AdamW with
linear warmup then cosine (or constant/linear) decay, gradient clipping, periodic evaluation into a
tidy metrics table, interval checkpoints, exact resume, bf16 autocast on request, and stops with a
clear error when the loss diverges, leaving the last good checkpoint in place.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm

from reasonlens.io import write_csv
from reasonlens.tasks.batch import Batch
from reasonlens.training.checkpoint import load_state, read_state_info, save_state
from reasonlens.training.sources import BatchSource

Schedule = Literal["cosine", "linear", "constant"]
SCHEDULES = ("cosine", "linear", "constant")
STATE_FILE = "state.safetensors"
METRICS_FILE = "metrics.csv"
MODEL_FILE = "model.safetensors"
EMBEDDING_PARAMS = ("embed.W_E", "pos_embed.W_pos")  # what decay_embeddings=False exempts

# Fields that change the numbers a run produces: a resumed run must agree on all of them.
_NUMERIC_FIELDS = (
    "steps",
    "batch_size",
    "lr",
    "warmup_steps",
    "warmup_start_lr",
    "min_lr",
    "schedule",
    "weight_decay",
    "decay_embeddings",
    "betas",
    "grad_clip",
    "reset_warmup",
    "bf16",
    "seed",
)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def check_device(device: str, what: str = "device") -> None:
    """Raise ValueError, naming ``what``, unless ``device`` is "auto" or a torch device that exists here."""
    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"{what}: unknown device {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{what}={device!r} but CUDA is not available here")


@dataclass
class TrainConfig:
    """Optimisation, evaluation and checkpointing of one run.

    The learning rate rises linearly from ``warmup_start_lr`` to ``lr`` over ``warmup_steps``, then
    follows ``schedule`` down to ``min_lr`` at ``steps`` ("constant" stays at ``lr``). Weight decay
    applies to weight matrices and embeddings (parameters with two or more dimensions), not to
    gains and biases; with ``decay_embeddings=False`` not to the embeddings either (parameters
    named ``embed.W_E`` and ``pos_embed.W_pos``, :data:`EMBEDDING_PARAMS`).
    """

    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-3
    warmup_steps: int = 0
    warmup_start_lr: float = 0.0
    min_lr: float = 0.0
    schedule: Schedule = "cosine"
    weight_decay: float = 0.01
    decay_embeddings: bool = True  # False: no weight decay on the token and position embeddings
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 1.0
    reset_warmup: int = 0  # steps over which the lr rises back linearly after an optimizer reset
    eval_every: int = 100
    eval_batch_size: int = 2048
    checkpoint_every: int | None = None  # None: only at the end
    device: str = "auto"  # "auto" picks cuda when available
    bf16: bool = False  # bf16 autocast for forward and loss
    seed: int = 0  # torch's global RNG, for losses that draw noise
    progress: bool = True
    desc: str = "train"

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer; got {v!r}")
        if (
            isinstance(self.warmup_steps, bool)
            or not isinstance(self.warmup_steps, int)
            or self.warmup_steps < 0
        ):
            raise ValueError(f"TrainConfig.warmup_steps must be an integer >= 0; got {self.warmup_steps!r}")
        rw = self.reset_warmup
        if isinstance(rw, bool) or not isinstance(rw, int) or rw < 0:
            raise ValueError(f"TrainConfig.reset_warmup must be an integer >= 0; got {self.reset_warmup!r}")
        if self.warmup_steps > self.steps:
            raise ValueError(f"TrainConfig.warmup_steps={self.warmup_steps} exceeds steps={self.steps}")
        for name in ("lr", "warmup_start_lr", "min_lr", "weight_decay"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"TrainConfig.{name} must be a finite number >= 0; got {v!r}")
        if not isinstance(self.decay_embeddings, bool):
            raise ValueError(
                f"TrainConfig.decay_embeddings must be True or False; got {self.decay_embeddings!r}"
            )
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0; got {self.lr!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.schedule must be one of {SCHEDULES}; got {self.schedule!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1); got {self.betas!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip must be > 0 or None; got {self.grad_clip!r}")
        if self.checkpoint_every is not None and (
            not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 1
        ):
            raise ValueError(
                "TrainConfig.checkpoint_every must be a positive integer or None; "
                f"got {self.checkpoint_every!r}"
            )
        check_device(self.device, "TrainConfig.device")

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based)."""
    if step < cfg.warmup_steps:
        return cfg.warmup_start_lr + (cfg.lr - cfg.warmup_start_lr) * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.schedule == "linear":
        return cfg.lr + (cfg.min_lr - cfg.lr) * progress
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


# -- losses and metrics -----------------------------------------------------------------------------


def masked_lm_loss(model: nn.Module, batch: Batch) -> Float[Tensor, ""]:
    """Mean next-token cross-entropy over the positions where ``batch.mask`` is True."""
    logits = model(batch.inputs)
    sel = batch.mask
    return F.cross_entropy(logits[sel].float(), batch.targets[sel])


@torch.no_grad()
def evaluate_lm(
    model: nn.Module,
    batch: Batch,
    batch_size: int = 2048,
    logits_fn: Callable[[nn.Module, Batch], Tensor] | None = None,
) -> dict[str, float]:
    """Masked loss, token accuracy, and ``accuracy``: the fraction of examples whose every masked
    token is predicted correctly (for the matching tasks, answer accuracy). ``logits_fn(model,
    batch)`` computes the logits when ``model(batch.inputs)`` does not (default: that call)."""
    was_training = model.training
    model.eval()
    loss_sum, n_tok, n_tok_ok, n_ex_ok = 0.0, 0, 0, 0
    device = next(model.parameters()).device
    for i in range(0, len(batch), batch_size):
        b = batch[i : i + batch_size].to(device)
        logits = (model(b.inputs) if logits_fn is None else logits_fn(model, b)).float()
        sel = b.mask
        loss_sum += F.cross_entropy(logits[sel], b.targets[sel], reduction="sum").item()
        ok = (logits.argmax(-1) == b.targets) | ~sel
        n_tok += int(sel.sum())
        n_tok_ok += int((ok & sel).sum())
        n_ex_ok += int(ok.all(dim=1).sum())
    model.train(was_training)
    return {
        "loss": loss_sum / max(n_tok, 1),
        "token_accuracy": n_tok_ok / max(n_tok, 1),
        "accuracy": n_ex_ok / max(len(batch), 1),
    }


LossFn = Callable[[nn.Module, Batch], Tensor]
EvalFn = Callable[[nn.Module, Batch, int], Mapping[str, float]]
StopFn = Callable[[pd.DataFrame], bool]


@dataclass
class TrainResult:
    module: nn.Module
    metrics: pd.DataFrame  # tidy: step, split, metric, value
    steps_done: int
    wall_time: float  # seconds spent training, summed over resumed segments
    stopped_early: bool = False
    out_dir: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def final(self, split: str, metric: str = "accuracy") -> float:
        m = self.metrics
        sel = m[(m.split == split) & (m.metric == metric)]
        return float(sel.value.iloc[-1]) if len(sel) else float("nan")


def train(
    module: nn.Module,
    source: BatchSource,
    cfg: TrainConfig,
    evals: Mapping[str, Batch] | None = None,
    loss_fn: LossFn = masked_lm_loss,
    eval_fn: EvalFn = evaluate_lm,
    out_dir: str | Path | None = None,
    resume: bool = True,
    stop_when: StopFn | None = None,
    extra_params: list[nn.Parameter] | None = None,
    reset_optimizer_at: Callable[[int], bool] | None = None,
    monitors: Mapping[str, Callable[[nn.Module], Mapping[str, float]]] | None = None,
) -> TrainResult:
    """Train ``module`` on batches from ``source`` for ``cfg.steps`` optimizer steps.

    ``evals`` maps split names to fixed batches evaluated every ``cfg.eval_every`` steps (and at
    step 0 and the end) with ``eval_fn``. With ``out_dir``, the run writes ``metrics.csv``,
    ``state.safetensors`` (resumable) at every ``cfg.checkpoint_every`` steps and at the end, and
    ``model.safetensors`` when ``module`` has a ``save`` method; with ``resume`` a run finding a
    state file there continues from it and ends bit-identical to an uninterrupted run.
    ``stop_when(metrics)`` is asked after each evaluation and ends the run early when True.
    ``reset_optimizer_at(step)``, when True, gives the optimizer a fresh state (moments and step
    counts, as a new AdamW would have) before step ``step`` (stepwise internalization resets it at
    every removal); with ``cfg.reset_warmup`` the learning rate then rises linearly back over that
    many steps, since a fresh Adam's first updates move every weight by about the full lr.
    ``monitors`` maps a name to ``fn(module) -> {metric: value}``, recorded at every evaluation
    as rows of split ``name`` (e.g. embedding norms; cheap functions of the weights).
    """
    cfg.validate()
    evals = dict(evals or {})
    device = cfg.resolved_device()
    module.to(device)
    out = Path(out_dir) if out_dir is not None else None
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    named += [("", p) for p in extra_params or []]
    params = [p for _, p in named]
    skip = () if cfg.decay_embeddings else EMBEDDING_PARAMS
    decay = [p for n, p in named if p.ndim >= 2 and n not in skip]
    no_decay = [p for n, p in named if p.ndim < 2 or n in skip]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=cfg.betas,
    )
    torch.manual_seed(cfg.seed)

    start, wall_before, rows, resumed_ema = 0, 0.0, [], None
    if out is not None and resume and (out / STATE_FILE).exists():
        info = read_state_info(out / STATE_FILE)
        _check_resumable(info.get("train_config", {}), cfg, out / STATE_FILE)
        info = load_state(out / STATE_FILE, module, optimizer)
        start, wall_before = int(info["step"]), float(info.get("wall_time", 0.0))
        resumed_ema = info.get("loss_ema")
        if (out / METRICS_FILE).exists():
            old = pd.read_csv(out / METRICS_FILE)
            rows = old[old.step <= start].to_dict("records")

    def record(step: int, loss_ema: float | None = None) -> None:
        for split, batch in evals.items():
            for metric, value in eval_fn(module, batch, cfg.eval_batch_size).items():
                rows.append({"step": step, "split": split, "metric": metric, "value": float(value)})
        for name, fn in (monitors or {}).items():
            for metric, value in fn(module).items():
                rows.append({"step": step, "split": name, "metric": metric, "value": float(value)})
        if loss_ema is not None:  # running mean of the training-batch loss, and the current lr
            rows.append({"step": step, "split": "train_batch", "metric": "loss", "value": loss_ema})
            rows.append({"step": step, "split": "train_batch", "metric": "lr", "value": lr})
        if out is not None:
            write_csv(pd.DataFrame(rows), out / METRICS_FILE)

    def checkpoint(step: int, wall: float) -> None:
        if out is not None:
            info = {"step": step, "wall_time": wall, "train_config": cfg.to_dict(), "loss_ema": loss_ema}
            save_state(out / STATE_FILE, module, optimizer, info)

    if start == 0 and (evals or monitors):
        record(0)
    module.train()
    stopped, step = False, start
    t0 = time.perf_counter()
    bar = tqdm(
        range(start, cfg.steps),
        initial=start,
        total=cfg.steps,
        desc=cfg.desc,
        disable=not cfg.progress,
        leave=False,
        dynamic_ncols=True,
    )
    loss_ema = None if resumed_ema is None else float(resumed_ema)  # the running mean survives a resume
    last_reset = _last_reset(reset_optimizer_at, start, cfg.reset_warmup)
    lr = lr_at(start, cfg)
    for step in bar:
        if reset_optimizer_at is not None and reset_optimizer_at(step):
            optimizer.state.clear()
            last_reset = step
        lr = lr_at(step, cfg)
        if cfg.reset_warmup and last_reset is not None:
            lr *= min(1.0, (step - last_reset + 1) / cfg.reset_warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = source(step, cfg.batch_size).to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = loss_fn(module, batch)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            if out is not None and rows:
                write_csv(pd.DataFrame(rows), out / METRICS_FILE)
            where = (
                f"; the last good checkpoint is {out / STATE_FILE}"
                if out and (out / STATE_FILE).exists()
                else ""
            )
            raise TrainingDiverged(
                f"{cfg.desc}: loss became {loss_value} at step {step} (lr={lr:.3g}){where}. "
                "Lower the learning rate, enable grad_clip, or check the data."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        done = step + 1
        loss_ema = loss_value if loss_ema is None else 0.95 * loss_ema + 0.05 * loss_value
        if done % cfg.eval_every == 0 or done == cfg.steps:
            record(done, loss_ema)
            bar.set_postfix(_postfix(rows, loss_ema), refresh=False)
            if stop_when is not None and stop_when(pd.DataFrame(rows)):
                stopped = True
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done != cfg.steps:
            checkpoint(done, wall_before + time.perf_counter() - t0)
        if stopped:
            break
    bar.close()
    steps_done = step + 1 if cfg.steps > start else start
    wall = wall_before + time.perf_counter() - t0
    if steps_done > start or (out is not None and not (out / STATE_FILE).exists()):
        checkpoint(steps_done, wall)
    if out is not None and hasattr(module, "save"):
        module.save(out / MODEL_FILE, metadata={"train_config": cfg.to_dict(), "steps_done": steps_done})
    metrics = pd.DataFrame(rows, columns=["step", "split", "metric", "value"])
    return TrainResult(module, metrics, steps_done, wall, stopped, out)


def _last_reset(reset_at: Callable[[int], bool] | None, start: int, window: int) -> int | None:
    """The last reset step before ``start`` within ``window`` steps (what a resumed run needs to
    continue a post-reset warm-up), or None."""
    if reset_at is None or window == 0:
        return None
    return next((s for s in range(start - 1, max(-1, start - window - 1), -1) if reset_at(s)), None)


def _postfix(rows: list[dict[str, Any]], loss_ema: float | None) -> dict[str, str]:
    last_step = rows[-1]["step"]
    post = {"loss": f"{loss_ema:.3f}"} if loss_ema is not None else {}
    for r in rows:
        if r["step"] == last_step and r["metric"] == "accuracy":
            post[r["split"]] = f"{r['value']:.3f}"
    return post


def _check_resumable(saved: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    now = cfg.to_dict()
    # a field added after a state was saved reads as its default there
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    diff = {
        k: (saved.get(k, defaults[k]), now[k]) for k in _NUMERIC_FIELDS if saved.get(k, defaults[k]) != now[k]
    }
    if diff:
        details = ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"cannot resume from {path}: its training config differs ({details}). "
            "Use another output directory, or pass resume=False to start over."
        )


def load_metrics(out_dir: str | Path) -> pd.DataFrame:
    return pd.read_csv(Path(out_dir) / METRICS_FILE)
