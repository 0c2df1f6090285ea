"""Training runs on the matching tasks, one at a time or as a resumable grid.

A :class:`MatchingRun` is everything one run needs (model variant, task, budget, evaluation);
:func:`execute` trains it under a run directory and returns one results row; :func:`run_grid`
executes many, skipping runs whose results already exist, so an interrupted grid loses at most
the steps since a run's last checkpoint. Experiments (``experiments/matching_*.py``) build the
runs; this module only runs them.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from reasonlens.analysis.ood import embedding_norm_monitor
from reasonlens.cli import ReportedError
from reasonlens.io import write_csv, write_json
from reasonlens.models import ModelConfig, Transformer, init_std
from reasonlens.tasks import matching
from reasonlens.training.grid import Backend, run_tasks
from reasonlens.training.precision import PrecisionChoice, Timer, choose_precision, seconds_per_step
from reasonlens.training.sources import FixedSource, StreamSource
from reasonlens.training.trainer import METRICS_FILE, MODEL_FILE, TrainConfig, train

RESULT_FILE = "result.json"
SPLITS = ("train", "test", "ood")
GRID_CHECKPOINT_STEPS = 200  # the most steps a killed grid run loses
# labels that repeat a model or training field (so they are left out of run fingerprints)
DERIVED_LABELS = ("precision", "embed_init_scale", "decay_embeddings")


@dataclass
class MatchingRun:
    """One training run on a matching task.

    ``n_train=None`` draws fresh training examples every step; an integer fixes a training set of
    that size (epochs over it, as in the authors' code). Evaluation uses ``n_eval`` examples per
    split, drawn once with ``eval_seed`` (the same for every run, so runs are compared on the same
    examples). ``solved_patience``: stop once test accuracy has been >= ``solved_threshold`` for
    that many consecutive evaluations (None: always train ``train.steps`` steps). ``labels`` are
    copied into the results row (e.g. gamma, norm, seed).
    """

    name: str
    model: ModelConfig
    train: TrainConfig
    kind: str = "single_chain"
    steps: int | tuple[int, ...] = 2
    seq_len: int = 13
    order: str = "random"
    n_tokens: int = matching.DEFAULT_N_TOKENS
    n_train: int | None = None
    n_eval: int = 2000
    data_seed: int = 0
    eval_seed: int = 12345
    solved_threshold: float = 0.99
    solved_patience: int | None = None
    labels: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"MatchingRun.name must be a non-empty name without '/'; got {self.name!r}")
        need = matching.vocab_size(self.kind, self.seq_len, self.n_tokens)
        if self.model.d_vocab < need:
            raise ValueError(
                f"run {self.name}: d_vocab={self.model.d_vocab} is too small for {self.kind} with "
                f"seq_len={self.seq_len} and n_tokens={self.n_tokens} (needs {need})"
            )
        if self.model.n_ctx < self.seq_len:
            raise ValueError(f"run {self.name}: n_ctx={self.model.n_ctx} < seq_len={self.seq_len}")
        if self.n_train is not None and self.n_train < self.train.batch_size:
            raise ValueError(f"run {self.name}: n_train={self.n_train} < batch_size={self.train.batch_size}")
        if self.solved_patience is not None and self.solved_patience < 1:
            raise ValueError(
                f"run {self.name}: solved_patience must be >= 1 or None; got {self.solved_patience}"
            )
        # validates the task arguments (raises with a clear message on an impossible task)
        matching.batch_maker("train", self.steps, self.seq_len, self.kind, self.n_tokens, self.order)

    def task_kwargs(self) -> dict[str, Any]:
        return dict(
            steps=self.steps, seq_len=self.seq_len, kind=self.kind, n_tokens=self.n_tokens, order=self.order
        )

    def fingerprint(self) -> dict[str, Any]:
        """Everything that determines the run's numbers (not its progress bar)."""
        t = self.train.to_dict()
        for k in ("progress", "desc", "device", "eval_batch_size", "checkpoint_every"):
            t.pop(k)
        d = dataclasses.asdict(self)
        d["model"], d["train"] = self.model.to_dict(), t
        # Fields added later, at their defaults, leave the fingerprints of older runs unchanged;
        # the precision label repeats train.bf16.
        if d["model"].get("embed_init_scale") == 1.0:
            d["model"].pop("embed_init_scale")
        if d["train"].get("decay_embeddings") is True:
            d["train"].pop("decay_embeddings")
        d["labels"] = {k: v for k, v in d["labels"].items() if k not in DERIVED_LABELS}
        d["steps"] = list(self.steps) if isinstance(self.steps, tuple) else self.steps
        return json.loads(json.dumps(d, sort_keys=True, default=str))


def grid_train_config(preset: Any, *, seed: int, device: str, progress: bool, desc: str) -> TrainConfig:
    """The :class:`TrainConfig` of one grid run, built from an experiment's preset.

    ``preset`` is any object with ``steps, batch_size, lr, warmup_steps, min_lr, schedule,
    eval_every, bf16`` (and optionally ``warmup_start_lr``, default 0): the fields the matching
    experiments' presets share. Every grid uses AdamW with weight decay 0.01 and gradient clipping
    at 1 (the authors' settings), and caps warm-up at a quarter of the steps so that short runs
    (``--steps``, ``--quick``) still train at their peak rate. Every run checkpoints at each
    evaluation (at least every ``GRID_CHECKPOINT_STEPS`` steps, optionally ``preset.checkpoint_every``),
    so a killed run resumes from there to the same final weights.
    """
    every = getattr(preset, "checkpoint_every", None) or min(preset.eval_every, GRID_CHECKPOINT_STEPS)
    return TrainConfig(
        steps=preset.steps,
        batch_size=preset.batch_size,
        lr=preset.lr,
        warmup_steps=min(preset.warmup_steps, preset.steps // 4),
        warmup_start_lr=getattr(preset, "warmup_start_lr", 0.0),
        min_lr=preset.min_lr,
        schedule=preset.schedule,
        weight_decay=0.01,
        grad_clip=1.0,
        eval_every=preset.eval_every,
        device=device,
        bf16=preset.bf16,
        seed=seed,
        progress=progress,
        desc=desc,
        checkpoint_every=max(1, int(every)),
    )


TEACHING_LR_STD = (0.006, 0.023)  # the teaching run: lr 5e-5 to 2e-4 at init std 0.0087 (issue 11)


def lr_std_note(runs: Sequence[MatchingRun]) -> str:
    """lr / init std of each gamma in ``runs`` (std of the d_model-fan-in matrices), against the
    teaching run's range: with Adam a step moves a weight by about lr, so this ratio, not gamma
    alone, says whether a grid tests small init in the paper's regime."""
    seen: dict[float, float] = {}
    for run in runs:
        seen.setdefault(run.model.gamma, run.train.lr / init_std(run.model, run.model.d_model))
    lo, hi = TEACHING_LR_STD
    where = lambda r: "inside" if lo <= r <= hi else "outside"  # noqa: E731
    parts = [f"gamma {g:g}: {r:.3g} ({where(r)})" for g, r in sorted(seen.items())]
    return f"lr / init std: {', '.join(parts)}; the teaching run's range: {lo}-{hi}"


def stored_precision(runs: Sequence[MatchingRun], runs_dir: str | Path) -> str | None:
    """The precision ("fp32"/"bf16") of the first of ``runs`` already started under ``runs_dir``
    (from its ``run.json``), or None when none is."""
    for run in runs:
        path = Path(runs_dir) / run.name / "run.json"
        if path.is_file():
            bf16 = json.loads(path.read_text()).get("fingerprint", {}).get("train", {}).get("bf16")
            if bf16 is not None:
                return "bf16" if bf16 else "fp32"
    return None


def resolve_precision(
    runs: Sequence[MatchingRun],
    requested: str,
    runs_dir: str | Path | None = None,
    *,
    steps: int = 5,
    warmup: int = 2,
    timer: Timer = time.perf_counter,
    threads: int | None = None,
) -> tuple[list[MatchingRun], PrecisionChoice]:
    """Set every run's precision (``train.bf16`` and the ``precision`` label, a results column).

    ``requested`` is "fp32", "bf16" or "auto": time ``steps`` training steps of the first run's
    model, batch size and device in both precisions and take the faster
    (:func:`~reasonlens.training.precision.choose_precision`). With "auto", runs already started
    under ``runs_dir`` keep the precision they were started in, so a re-run resumes them.
    ``threads``: torch threads while timing (a grid backend's threads per run), restored after.
    """
    if not runs:
        return [], choose_precision(requested if requested != "auto" else "fp32", lambda p: 0.0)
    stored = stored_precision(runs, runs_dir) if runs_dir is not None and requested == "auto" else None
    if stored is not None:
        choice = PrecisionChoice(stored, "auto", reason=f"auto: as the runs already in {runs_dir}")
    else:
        first = runs[0]
        source = StreamSource(matching.batch_maker("train", **first.task_kwargs()), seed=first.data_seed)

        def measure(precision: str) -> float:
            return seconds_per_step(
                lambda: Transformer(first.model), source, first.train, bf16=precision == "bf16",
                steps=steps, warmup=warmup, timer=timer,
            )  # fmt: skip

        before = torch.get_num_threads()
        try:
            if threads is not None and requested == "auto":
                torch.set_num_threads(threads)
            choice = choose_precision(requested, measure)
        finally:
            torch.set_num_threads(before)
    out = [
        dataclasses.replace(
            r,
            train=dataclasses.replace(r.train, bf16=choice.bf16),
            labels={**r.labels, "precision": choice.precision},
        )
        for r in runs
    ]
    return out, choice


def eval_sets(run: MatchingRun) -> dict[str, Any]:
    """The fixed evaluation batches of a run (train-distribution, test and OOD splits)."""
    kw = run.task_kwargs()
    return {s: matching.generate(run.n_eval, split=s, seed=run.eval_seed, **kw).batch() for s in SPLITS}


def first_step_reaching(
    metrics: pd.DataFrame, split: str, threshold: float, metric: str = "accuracy"
) -> int | None:
    """The first evaluated step whose ``metric`` on ``split`` is >= ``threshold`` (None if never)."""
    sel = metrics[(metrics.split == split) & (metrics.metric == metric) & (metrics.value >= threshold)]
    return int(sel.step.min()) if len(sel) else None


def _solved(run: MatchingRun):  # noqa: ANN202
    def stop(metrics: pd.DataFrame) -> bool:
        acc = metrics[(metrics.split == "test") & (metrics.metric == "accuracy")].value.to_numpy()
        n = run.solved_patience
        return len(acc) >= n and bool((acc[-n:] >= run.solved_threshold).all())

    return stop


def execute(run: MatchingRun, out_dir: str | Path, force: bool = False) -> dict[str, Any]:
    """Train ``run`` under ``out_dir/<run.name>/`` and return its results row.

    A finished run with the same fingerprint is not retrained (its stored row is returned) unless
    ``force``; an unfinished one resumes from its last checkpoint.
    """
    run_dir = Path(out_dir) / run.name
    result_path = run_dir / RESULT_FILE
    fingerprint = run.fingerprint()
    if run_dir.exists() and force:
        shutil.rmtree(run_dir)
    if result_path.exists():
        stored = json.loads(result_path.read_text())
        if stored.get("fingerprint") == fingerprint:
            row = dict(stored["row"])
            for k, v in run.labels.items():  # labels added since (precision) fill in
                row.setdefault(k, v)
            return row
        raise ValueError(
            f"{run_dir} holds a finished run with different settings; pass force=True (--force) to "
            "retrain it, or choose another output directory"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json({"fingerprint": fingerprint}, run_dir / "run.json")

    if run.n_train is None:
        source = StreamSource(matching.batch_maker("train", **run.task_kwargs()), seed=run.data_seed)
    else:
        data = matching.generate(run.n_train, split="train", seed=run.data_seed, **run.task_kwargs()).batch()
        source = FixedSource(data, seed=run.data_seed)
    stop = _solved(run) if run.solved_patience else None
    monitors = {"embedding": embedding_norm_monitor(run.n_tokens)}  # ID/OOD/position norms
    result = train(
        Transformer(run.model), source, run.train, eval_sets(run), out_dir=run_dir, stop_when=stop,
        monitors=monitors,
    )  # fmt: skip
    m = result.metrics
    row = {
        "run": run.name,
        **run.labels,
        "init": run.model.init,
        "steps": result.steps_done,
        **{f"{s}_acc": result.final(s) for s in SPLITS},
        "step_99": first_step_reaching(m, "test", 0.99),
        "stopped_early": result.stopped_early,
        "wall_time_s": round(result.wall_time, 1),
        "checkpoint": f"{run.name}/{MODEL_FILE}",
    }
    write_json({"fingerprint": fingerprint, "row": row}, result_path, sort_keys=False)
    return row


def _execute_quietly(job: tuple[MatchingRun, Path, bool, bool]) -> dict[str, Any]:
    """Worker entry point of :func:`run_grid` (module level, so that it pickles)."""
    run, runs_dir, force, bar = job
    if not bar:
        run = dataclasses.replace(run, train=dataclasses.replace(run.train, progress=False))
    return execute(run, runs_dir, force=force)


def _check_stored(run: MatchingRun, runs_dir: Path) -> None:
    path = runs_dir / run.name / RESULT_FILE
    if path.exists() and json.loads(path.read_text()).get("fingerprint") != run.fingerprint():
        raise ValueError(
            f"{runs_dir / run.name} holds a finished run with different settings; pass force=True "
            "(--force) to retrain it, or choose another output directory"
        )


def run_grid(
    runs: Sequence[MatchingRun],
    out_dir: str | Path,
    force: bool = False,
    progress: bool = True,
    backend: Backend | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Execute every run (skipping finished ones) on ``backend`` and return (results, curves).

    ``backend`` (default: serial) is a :class:`reasonlens.training.grid.Backend`: local worker
    processes or Ray; the numbers do not depend on it. ``results`` has one row per finished run,
    in the order of ``runs``; ``curves`` is their tidy metrics with the run's labels. Both are
    rewritten under ``out_dir`` (``results.csv``, ``curves.csv``) as each run finishes, from
    finished runs only. A failed run is reported by name with its error while the others finish;
    :class:`GridFailed` is then raised, naming them, after the files are written.
    """
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique; got duplicates in {names}")
    backend = backend or Backend()
    out = Path(out_dir)
    runs_dir = out / "runs"
    if not force:
        for run in runs:
            _check_stored(run, runs_dir)
    by_name = {r.name: r for r in runs}
    rows: dict[str, dict[str, Any]] = {}
    curves: dict[str, pd.DataFrame] = {}

    def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
        order = [n for n in names if n in rows]
        res = pd.DataFrame([rows[n] for n in order])
        cur = pd.concat([curves[n] for n in order], ignore_index=True) if order else pd.DataFrame()
        return res, cur

    def gather(name: str, row: dict[str, Any]) -> None:
        rows[name] = {**row, "checkpoint": f"runs/{row['checkpoint']}"}
        metrics = pd.read_csv(runs_dir / name / METRICS_FILE)
        curves[name] = metrics.assign(run=name, **by_name[name].labels)
        res, cur = frames()
        write_csv(res, out / "results.csv")
        write_csv(cur, out / "curves.csv")

    # one bar over the grid; a serial grid keeps each run's own bar (nothing else prints then)
    inner_bars = progress and backend.workers == 1 and backend.ray is None
    jobs = [(r, runs_dir, force, inner_bars) for r in runs]
    _, failures = run_tasks(_execute_quietly, jobs, names, backend, progress=progress, on_done=gather)
    if failures:
        raise GridFailed(failures, out, finished=len(rows))
    return frames()


class GridFailed(ReportedError):
    """Some runs of a grid failed; the others finished and are in results.csv / curves.csv.

    A :class:`reasonlens.cli.ReportedError` (a RuntimeError): a script's ``cli.run`` prints it as one
    line ``error: ...`` and exits 2, no traceback (unless --debug)."""

    def __init__(self, failures: dict[str, str], out: Path, finished: int | None = None) -> None:
        self.failures = failures
        self.out = Path(out)
        self.finished = finished
        lines = "; ".join(f"{n}: {e}" for n, e in failures.items())
        of = "" if finished is None else f" of {finished + len(failures)}"
        if finished == 0:
            where = f"no run finished (checkpoints are under {self.out / 'runs'})"
        else:
            count = "" if finished is None else f"{finished} "
            where = f"the {count}finished runs are in {self.out / 'results.csv'}"
        super().__init__(
            f"{len(failures)}{of} run(s) failed ({lines}); {where}; "
            "rerun the same command to resume the failed ones"
        )


def seed_summary(
    results: pd.DataFrame,
    by: Sequence[str] = ("norm", "gamma"),
    splits: Sequence[str] = SPLITS,
    threshold_column: str = "step_99",
) -> pd.DataFrame:
    """One row per cell ``by`` of a grid's results: the number of seeds, mean and sd over seeds
    (sample sd, NaN for one seed) of each ``{split}_acc``, how many seeds reached 99% test accuracy
    (``reached_99``; ``step_99`` not NaN), the mean / min / max of the step at which they did, and
    every seed's step (``step_99_by_seed``, ``seed:step``, ``-`` for not reached)."""
    missing = [c for c in (*by, "seed", threshold_column, *(f"{s}_acc" for s in splits)) if c not in results]
    if missing:
        raise ValueError(f"seed_summary: results lack column(s) {missing}")
    rows = []
    for key, g in results.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = dict(zip(by, key))
        row["n_seeds"] = int(g.seed.nunique())
        for s in splits:
            row[f"{s}_acc_mean"] = float(g[f"{s}_acc"].mean())
            row[f"{s}_acc_sd"] = float(g[f"{s}_acc"].std(ddof=1)) if len(g) > 1 else float("nan")
        steps = g[threshold_column]
        reached = steps.dropna()
        row["reached_99"] = int(len(reached))
        row["step_99_mean"] = float(reached.mean()) if len(reached) else float("nan")
        row["step_99_min"] = float(reached.min()) if len(reached) else float("nan")
        row["step_99_max"] = float(reached.max()) if len(reached) else float("nan")
        row["step_99_by_seed"] = " ".join(
            f"{seed}:{int(st) if pd.notna(st) else '-'}" for seed, st in zip(g.seed, steps)
        )
        rows.append(row)
    return pd.DataFrame(rows)
