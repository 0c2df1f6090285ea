"""Scratchpads (Nye et al. 2021): train direct and scratchpad models of the same size and budget,
grade them by greedy decoding per length, and probe the direct model for the intermediate values
the scratchpad writes out (carries for addition, running sums for polynomials).

- :class:`ScratchpadSetup` is the whole configuration (task, length split, data sizes, model shape,
  optimisation); :func:`preset` gives the ``"cpu"`` and ``"quick"`` ones.
- :func:`train_source` is the batch source (a pure function of the step): fresh examples of the
  training lengths only, each shifted right by a random number of ``PAD`` tokens (``random_offset``)
  so that every row of the learned position embedding a test example reads is trained; without it
  the positions only a longer test example reaches would never have been seen by either model.
- :func:`train_model` trains one method through the package's one trainer
  (:func:`reasonlens.training.train` with its masked next-token loss).
- :func:`evaluate` greedy-decodes from the prompt (``... =``, the same for both methods) and grades
  exact match of the final answer, per length; the scratchpad is not graded for ``accuracy``
  (``scratch_accuracy`` reports whether it was written exactly).
- :func:`probe_intermediates` probes the residual stream entering block 0 and leaving every block,
  at every position of the teacher-forced direct sequences of one length, for each column's carry
  (addition: the carry into column ``i``, ``carry{i}``) or each running sum (polynomial:
  ``sum{k}``), with the toolkit's probes and shuffled-label controls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from reasonlens.models import ModelConfig, Transformer
from reasonlens.models.decoding import greedy_decode
from reasonlens.probes import probe_store
from reasonlens.probes.collect import collect_activations, resid_hooks
from reasonlens.tasks import addition, polynomial
from reasonlens.tasks import scratch as sp
from reasonlens.tasks.batch import Batch
from reasonlens.training import TrainConfig, TrainResult, train

TASKS: tuple[str, ...] = ("addition", "polynomial")
METHODS: tuple[str, ...] = sp.MODES  # ("direct", "scratchpad")
PRESETS: tuple[str, ...] = ("cpu", "quick")
RESULT_COLUMNS = [
    "task", "method", "digits", "accuracy", "seed", "in_distribution", "n_examples", "scratch_accuracy",
    "answer_digit_accuracy", "n_params", "train_steps", "batch_size", "train_seconds",
]  # fmt: skip


def _positive_int(name: str, v: object) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"ScratchpadSetup.{name} must be a positive integer; got {v!r}")


@dataclass(frozen=True)
class ScratchpadSetup:
    """One scratchpad experiment: task, length split, data, model shape and optimisation.

    ``train_sizes`` / ``test_sizes`` are digits per operand (addition) or terms (polynomial);
    every test size above ``max(train_sizes)`` is out of distribution, and no training example
    ever has one (:func:`train_source` draws only ``train_sizes``). Both methods get the same
    model shape, ``n_ctx`` (the longest scratchpad sequence of the test sizes), steps and batch
    size: the same number of training examples (the scratchpad ones are longer sequences).
    """

    task: str = "addition"
    preset: str = "cpu"
    train_sizes: tuple[int, ...] = addition.TRAIN_DIGITS
    test_sizes: tuple[int, ...] = addition.TEST_DIGITS
    modulus: int = 10  # polynomial only
    n_test: int = 100  # per test size
    n_valid: int = 256  # teacher-forced validation during training, training sizes
    n_probe: int = 2000  # direct sequences of the probed size
    probe_size: int | None = None  # default: the largest training size
    n_layers: int = 3
    d_model: int = 64
    n_heads: int = 4
    d_mlp: int = 256
    steps: int = 3000
    batch_size: int = 64
    lr: float = 3e-3  # scratchpad model after 3000 steps: 94% of tokens at 1e-3, 99.99% at 3e-3 (README)
    warmup_steps: int = 100
    eval_every: int = 250
    random_offset: bool = True
    decode_batch_size: int = 500
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "train_sizes", tuple(self.train_sizes))
        object.__setattr__(self, "test_sizes", tuple(self.test_sizes))
        self.validate()

    def validate(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}; got {self.task!r}")
        limit = addition.MAX_DIGITS if self.task == "addition" else polynomial.MAX_TERMS
        for name in ("train_sizes", "test_sizes"):
            sizes = getattr(self, name)
            bad = [s for s in sizes if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= limit]
            if not sizes or bad or len(set(sizes)) != len(sizes):
                raise ValueError(
                    f"ScratchpadSetup.{name} must be distinct integers in 1..{limit}; got {list(sizes)}"
                )
        for name in ("n_test", "n_valid", "n_probe", "n_layers", "d_model", "n_heads", "d_mlp", "steps",
                     "batch_size", "eval_every", "decode_batch_size"):  # fmt: skip
            _positive_int(name, getattr(self, name))
        if self.probe_size is not None and self.probe_size not in self.train_sizes + self.test_sizes:
            raise ValueError(
                f"ScratchpadSetup.probe_size must be a train or test size; got {self.probe_size!r}"
            )
        if self.task == "polynomial":
            polynomial.check_modulus(self.modulus)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        TrainConfig(**self._train_kwargs("direct", self.seed))  # its own checks, lr and device included

    @property
    def ood_sizes(self) -> tuple[int, ...]:
        return tuple(s for s in self.test_sizes if s > max(self.train_sizes))

    @property
    def probed_size(self) -> int:
        return self.probe_size if self.probe_size is not None else max(self.train_sizes)

    def make(self, n: int, sizes: Sequence[int], mode: str, seed: int | Sequence[int]):  # noqa: ANN201
        """``n`` examples of ``sizes`` in ``mode`` (an AdditionData or PolynomialData)."""
        if self.task == "addition":
            return addition.sample(n, sizes, mode, seed)
        return polynomial.sample(n, sizes, mode, seed, self.modulus)

    def longest(self, mode: str) -> int:
        """The longest sequence of ``mode`` over the train and test sizes."""
        sizes = sorted(set(self.train_sizes + self.test_sizes))
        return max(self.make(1, [s], mode, 0).seq.max_len for s in sizes)

    @property
    def n_ctx(self) -> int:
        """The longest sequence either method meets (a scratchpad one of the largest size)."""
        return self.longest("scratchpad")

    def model_config(self, seed: int) -> ModelConfig:
        return ModelConfig(
            n_layers=self.n_layers, d_model=self.d_model, n_heads=self.n_heads, d_mlp=self.d_mlp,
            n_ctx=self.n_ctx, d_vocab=sp.D_VOCAB, seed=seed,
        )  # fmt: skip

    def _train_kwargs(self, method: str, seed: int) -> dict[str, Any]:
        return dict(
            steps=self.steps, batch_size=self.batch_size, lr=self.lr,
            warmup_steps=min(self.warmup_steps, self.steps),
            min_lr=self.lr / 10, eval_every=self.eval_every, eval_batch_size=1024, device=self.device,
            seed=seed, progress=self.progress, desc=f"{self.task} {method} seed {seed}",
        )  # fmt: skip

    def train_config(self, method: str, seed: int) -> TrainConfig:
        return TrainConfig(**self._train_kwargs(method, seed))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> ScratchpadSetup:
        return dataclasses.replace(self, **changes)


def preset(name: str = "cpu", task: str = "addition", seed: int = 0) -> ScratchpadSetup:
    """``"cpu"``: sized for a 2-core CPU (both methods, decoding and probes within about 20
    minutes; see the README for the measured time); ``"quick"``: a seconds-long smoke run."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}; got {name!r}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}; got {task!r}")
    sizes = (
        dict(train_sizes=addition.TRAIN_DIGITS, test_sizes=addition.TEST_DIGITS)
        if task == "addition"
        else dict(train_sizes=polynomial.TRAIN_TERMS, test_sizes=polynomial.TEST_TERMS)
    )
    if name == "quick":
        return ScratchpadSetup(
            task=task, preset=name, n_test=12, n_valid=32, n_probe=120, n_layers=2, d_model=32, n_heads=2,
            d_mlp=64, steps=30, batch_size=16, lr=3e-3, warmup_steps=5, eval_every=15, seed=seed, **sizes,
        )  # fmt: skip
    return ScratchpadSetup(task=task, preset=name, seed=seed, **sizes)


# -- training --------------------------------------------------------------------------------------


class TrainSource:
    """Batches of fresh training examples: ``step`` seeds both the examples and their offsets,
    so the source is a pure function of the step (exact resume).

    With ``random_offset``, example ``i`` is shifted right by ``o_i`` uniform in
    ``0 .. L - length_i``, ``L`` the longest sequence of this mode at any test size: the rows of
    the position embedding that the longest test example reads are all trained, and a direct
    batch stays as short as direct sequences need (``L - 1`` inputs).
    """

    def __init__(self, setup: ScratchpadSetup, mode: str, seed: int):
        self.setup, self.mode, self.seed = setup, sp.check_mode(mode), seed
        self.width = setup.longest(mode)

    def __call__(self, step: int, batch_size: int) -> Batch:
        data = self.setup.make(batch_size, self.setup.train_sizes, self.mode, (self.seed, 1, step))
        seq = data.seq
        if self.setup.random_offset:
            room = (self.width - seq.length).numpy()
            rng = np.random.default_rng([self.seed, 2, step])
            offsets = torch.from_numpy((rng.random(len(seq)) * (room + 1)).astype(np.int64))
        else:
            offsets = None
        return seq.batch(offsets, width=self.width)


def train_source(setup: ScratchpadSetup, mode: str, seed: int) -> TrainSource:
    return TrainSource(setup, mode, seed)


def train_model(
    setup: ScratchpadSetup, method: str, seed: int, out_dir: str | Path | None = None
) -> tuple[Transformer, TrainResult]:
    """Train ``method``'s model (initial weights from ``seed``); with ``out_dir`` the run is
    checkpointed there and a finished one is reused (the trainer's resume)."""
    sp.check_mode(method)
    model = Transformer(setup.model_config(seed))
    valid = setup.make(setup.n_valid, setup.train_sizes, method, (seed, 3)).seq.batch()
    result = train(model, train_source(setup, method, seed), setup.train_config(method, seed),
                   evals={"valid": valid}, out_dir=out_dir)  # fmt: skip
    return model, result


# -- evaluation ------------------------------------------------------------------------------------


def make_test_sets(setup: ScratchpadSetup, mode: str, seed: int = 0) -> dict[int, Any]:
    """``n_test`` examples per test size (seeded apart from every training batch)."""
    return {s: setup.make(setup.n_test, [s], mode, (seed, 4, s)) for s in setup.test_sizes}


def answer_of(generated: list[int], mode: str) -> list[int] | None:
    """The answer tokens of a generated continuation of the prompt: up to the first ``END``, after
    the first ``</scratch>`` in scratchpad mode; None when that layout is not there."""
    if sp.END not in generated:
        return None
    body = generated[: generated.index(sp.END)]
    if mode == "scratchpad":
        if sp.CLOSE not in body:
            return None
        body = body[body.index(sp.CLOSE) + 1 :]
    return body


@torch.no_grad()
def evaluate(model: nn.Module, data: sp.ScratchData, batch_size: int = 500, slack: int = 2) -> pd.DataFrame:
    """Greedy decoding from every prompt of ``data``; one row per size: ``digits`` (the size),
    ``n_examples``, ``accuracy`` (answer exactly right and ``END`` produced), ``scratch_accuracy``
    (scratchpad mode: the scratchpad written exactly; NaN otherwise) and
    ``answer_digit_accuracy`` (answer digits right position by position)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    n_ctx = model.cfg.n_ctx
    if data.max_len > n_ctx:
        raise ValueError(f"the model's n_ctx={n_ctx} is too short for these examples ({data.max_len} tokens)")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = []
    for size in sorted(set(data.size.tolist())):
        sub = data[torch.nonzero(data.size == size).flatten()]
        prompts, plen = sub.prompts()
        max_new = min(int((sub.length - plen).max()) + slack, n_ctx - int(plen.max()))
        ok, scratch_ok, dig_right, dig_total = 0, 0, 0, 0
        for i in range(0, len(sub), batch_size):
            p, lengths = prompts[i : i + batch_size].to(device), plen[i : i + batch_size].to(device)
            out = greedy_decode(model, p, lengths, max_new, end_token=sp.END, pad_token=sp.PAD)
            for b in range(len(lengths)):
                gen, truth = out.generated(b), sub.answer_tokens(i + b)
                pred = answer_of(gen, sub.mode)
                ok += pred == truth
                full = sub.tokens[i + b, int(plen[i + b]) : int(sub.length[i + b])].tolist()
                scratch_ok += (
                    gen[: int(sub.answer_start[i + b] - plen[i + b])] == full[: len(full) - len(truth) - 1]
                )
                got = pred if pred is not None else []
                dig_right += sum(x == y for x, y in zip(got, truth))
                dig_total += len(truth)
        n = len(sub)
        rows.append({
            "digits": size, "n_examples": n, "accuracy": ok / n,
            "scratch_accuracy": scratch_ok / n if sub.mode == "scratchpad" else float("nan"),
            "answer_digit_accuracy": dig_right / max(dig_total, 1),
        })  # fmt: skip
    model.train(was_training)
    return pd.DataFrame(rows)


# -- probes ----------------------------------------------------------------------------------------


def intermediate_targets(data: Any) -> dict[str, np.ndarray]:
    """Per-example values the scratchpad writes and the direct answer needs: addition, the carry
    into column ``i`` (``carry{i}``, ``i = 1 .. columns``; the last is the answer's final digit);
    polynomial, the running sum after term ``k`` (``sum{k}``, modulo the modulus)."""
    if isinstance(data, addition.AdditionData):
        carries = data.carry_out.numpy()
        return {f"carry{i + 1}": carries[:, i] for i in range(carries.shape[1])}
    if isinstance(data, polynomial.PolynomialData):
        sums = data.running_sum.numpy()
        return {f"sum{k}": sums[:, k] for k in range(sums.shape[1])}
    raise ValueError(f"no intermediate targets for {type(data).__name__}")


def position_labels(seq: sp.ScratchData) -> list[str]:
    """A label per input position of one layout (its first example): the symbol read there, with
    its index among equal roles (``a0``, ``+``, ``b3``, ``=``, ``c2`` for answer digits; ``c0 ..``
    and ``x`` for polynomials)."""
    toks = seq.tokens[0, : int(seq.length[0]) - 1].tolist()
    plen, ans = int(seq.prompt_len[0]), int(seq.answer_start[0])
    labels, role, k = [], "a", 0
    is_poly = sp.AT in toks[:plen]
    role = "c" if is_poly else "a"
    for pos, t in enumerate(toks):
        if pos < plen:
            if t in (sp.PLUS, sp.AT, sp.EQUALS):
                labels.append(sp.SYMBOLS[t])
                role, k = ("x" if t == sp.AT else "b"), 0
                continue
            labels.append(role if role == "x" else f"{role}{k}")
            k += 1
        elif pos >= ans:
            labels.append(f"ans{pos - ans}")
        else:
            labels.append(sp.SYMBOLS[t])
    return labels


def probe_intermediates(
    model: Transformer, data: Any, seed: int = 0, test_frac: float = 0.3, alpha: float = 1.0
) -> pd.DataFrame:
    """Probe every residual-stream depth at every input position of the teacher-forced direct
    sequences in ``data`` (one size) for :func:`intermediate_targets`. The toolkit's columns plus
    ``depth`` (0 = entering block 0, ``l + 1`` = leaving block ``l``), ``column`` (the carry's
    column or the sum's term), ``token`` (:func:`position_labels`) and
    ``predicts_answer_digit``, the answer digit predicted there (-1 before the answer)."""
    seq = data.seq
    if seq.mode != "direct":
        raise ValueError(f"probe the direct model on direct-mode data; got mode {seq.mode!r}")
    if len(set(seq.size.tolist())) != 1:
        raise ValueError(f"probe one size at a time; got sizes {sorted(set(seq.size.tolist()))}")
    batch = seq.batch()
    hooks = resid_hooks(model.cfg.n_layers)
    store = collect_activations(model, batch.inputs, hooks)
    targets = intermediate_targets(data)
    table = probe_store(store, targets, solver="closed_form", seed=seed, test_frac=test_frac, alpha=alpha)
    table.insert(2, "depth", table.hook.map({h: d for d, h in enumerate(hooks)}))
    table.insert(4, "column", table.target.str.extract(r"(\d+)$", expand=False).astype(int))
    labels = position_labels(seq)
    ans = int(seq.answer_start[0])
    table.insert(4, "token", [labels[p] for p in table.position])
    table.insert(5, "predicts_answer_digit", [p + 1 - ans if p + 1 >= ans else -1 for p in table.position])
    return table
