"""Train the CoT solver, the decomposer and the sub-question solver; chain them; score them.

Each of the three models is a :class:`reasonlens.models.Transformer` of the same shape, trained
from scratch by :func:`reasonlens.training.train` for the same number of steps at the same batch
size, with the masked next-token loss on its own format (:mod:`reasonlens.decompose.formats`) and
a :class:`~reasonlens.training.FixedSource` over its own training batch. At inference (greedy
decoding throughout):

- ``cot``: the CoT solver writes every step and ``#### answer``; the answer is the number there;
- ``decomposer_solver``: the decomposer writes the sub-questions; the solver answers them in turn,
  each with the question, the sub-questions and its own answers so far; the final answer is the
  last number of the last sub-answer (as in Shridhar et al. 2023);
- ``oracle_solver``: the same solver given the true sub-questions (an oracle decomposer), which
  separates decomposition errors from solving errors;
- ``decomposer``: not an answer but the fraction of problems whose generated sub-questions equal
  the true ones exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor

from reasonlens.decompose.formats import (
    END,
    MODELS,
    NL,
    QMARK,
    SEP,
    cot_answer,
    generation_limits,
    last_number,
    make_batch,
    max_length,
    same_number,
    tokenizer_for,
    trim,
)
from reasonlens.models import ModelConfig, Transformer
from reasonlens.models.decoding import greedy_decode
from reasonlens.tasks.batch import Batch
from reasonlens.tasks.wordproblems import (
    WordProblem,
    WordTokenizer,
    check_steps,
    generate_problems,
    require_sub_questions,
)
from reasonlens.training import FixedSource, TrainConfig, TrainResult, masked_lm_loss, train

METHODS = ("cot", "decomposer_solver", "oracle_solver", "decomposer")
ANSWER_METHODS = METHODS[:3]
N_CTX_MARGIN = 16  # room past the longest training sequence for generations that run long


@dataclass(frozen=True)
class DecomposeConfig:
    """Model shape, training budget (the same for all three models) and data sizes of one preset."""

    n_layers: int = 3
    d_model: int = 64
    n_heads: int = 4
    d_mlp: int = 256
    steps: int = 1200
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 50
    n_train: int = 20_000
    n_valid: int = 256
    n_test_per_steps: int = 50
    n_steps: tuple[int, ...] = (2, 3, 4, 5)
    eval_every: int = 300
    decode_batch_size: int = 200

    def __post_init__(self) -> None:
        for f in ("n_layers", "d_model", "n_heads", "d_mlp", "steps", "batch_size", "warmup_steps",
                  "n_train", "n_valid", "n_test_per_steps", "eval_every", "decode_batch_size"):  # fmt: skip
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if f == "warmup_steps" else 1):
                raise ValueError(f"DecomposeConfig.{f} must be a positive integer; got {v!r}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"DecomposeConfig: d_model={self.d_model} is not divisible by n_heads={self.n_heads}"
            )
        if not self.lr > 0:
            raise ValueError(f"DecomposeConfig.lr must be > 0; got {self.lr!r}")
        if self.batch_size > self.n_train:
            raise ValueError(f"DecomposeConfig.batch_size={self.batch_size} exceeds n_train={self.n_train}")
        object.__setattr__(self, "n_steps", check_steps(self.n_steps))

    def key(self, seed: int, data_tag: str = "generated") -> str:
        """A short hash of everything that shapes a trained model (the checkpoint folder's suffix):
        these settings, the seed and the data (``data_tag``)."""
        d = dataclasses.asdict(self)
        for k in ("n_test_per_steps", "decode_batch_size"):  # evaluation only
            d.pop(k)
        text = json.dumps({**d, "seed": seed, "data": data_tag}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]


PRESETS: dict[str, DecomposeConfig] = {
    # A smoke run in seconds (the tests).
    "quick": DecomposeConfig(
        n_layers=1,
        d_model=16,
        n_heads=2,
        d_mlp=32,
        steps=6,
        batch_size=8,
        warmup_steps=1,
        n_train=64,
        n_valid=8,
        n_test_per_steps=3,
        eval_every=3,
        decode_batch_size=16,
    ),  # fmt: skip
    # CPU default, sized from a short run's CPU time (one thread, niced on a busy machine): about
    # 0.8 CPU-seconds per step of the three models together, so 1200 steps plus data and test
    # decoding come to roughly 17 minutes on one core (README, "Decomposer + solver").
    "cpu": DecomposeConfig(),
}


@dataclass
class Data:
    tokenizer: WordTokenizer
    train: list[WordProblem]
    valid: list[WordProblem]
    test: list[WordProblem]
    n_ctx: int
    limits: dict[str, int]  # most tokens each model may generate (from the training problems)
    tag: str = "generated"  # what the problems are: "generated", or a hash of the given ones


def make_data(
    cfg: DecomposeConfig,
    seed: int,
    given: tuple[Sequence[WordProblem], Sequence[WordProblem]] | None = None,
) -> Data:
    """Training and validation problems from the train pairs, test problems (``n_test_per_steps``
    of each step count) from the test pairs; the tokenizer is fitted on the training problems.

    ``given`` = (train, test) problems (e.g. read from GSM8K-socratic files) replaces the
    generated ones: the last tenth of ``train`` (at most ``n_valid``) is held out for validation,
    and every test problem is used (test words unseen in training read as ``<unk>``)."""
    if given is None:
        train_p = generate_problems(cfg.n_train, "train", seed=seed, steps=cfg.n_steps)
        valid_p = generate_problems(cfg.n_valid, "train", seed=10_000 + seed, steps=cfg.n_steps)
        n_test = cfg.n_test_per_steps * len(cfg.n_steps)
        test_p = generate_problems(n_test, "test", seed=seed, steps=cfg.n_steps)
    else:
        train_all, test_p = list(given[0]), list(given[1])
        for what, ps in (("train", train_all), ("test", test_p)):
            require_sub_questions(ps)
            if not ps:
                raise ValueError(f"no {what} problems given")
        if len(train_all) < 2:
            raise ValueError(f"{len(train_all)} training problem(s): need at least 2 (one for validation)")
        k = max(1, min(cfg.n_valid, len(train_all) // 10))
        train_p, valid_p = train_all[:-k], train_all[-k:]
    tag = "generated"
    if given is not None:
        texts = json.dumps([[p.question, p.socratic()] for p in (*train_p, *valid_p, *test_p)])
        tag = hashlib.sha256(texts.encode()).hexdigest()[:16]
    tok = tokenizer_for(train_p)
    n_ctx = max_length(tok, [*train_p, *valid_p, *test_p]) + N_CTX_MARGIN
    return Data(tok, train_p, valid_p, test_p, n_ctx, generation_limits(tok, train_p), tag)


def model_config(cfg: DecomposeConfig, data: Data, seed: int) -> ModelConfig:
    """The one shape all three models share."""
    return ModelConfig(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_mlp=cfg.d_mlp,
        d_vocab=len(data.tokenizer), n_ctx=data.n_ctx, act_fn="gelu", norm="pre", seed=seed,
    )  # fmt: skip


def train_model(
    name: str,
    cfg: DecomposeConfig,
    data: Data,
    seed: int,
    out_dir: Path | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> TrainResult:
    """Train model ``name`` (one of ``MODELS``) with the one trainer; with ``out_dir``, a finished
    run with the same settings is reused."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {MODELS}; got {name!r}")
    model = Transformer(model_config(cfg, data, seed))
    epochs = FixedSource(make_batch(data.tokenizer, data.train, name), seed=seed)

    def source(step: int, batch_size: int) -> Batch:  # a pure function of the step, as the trainer needs
        return trim(epochs(step, batch_size))

    tcfg = TrainConfig(
        steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup_steps=min(cfg.warmup_steps, cfg.steps),
        min_lr=cfg.lr / 10, eval_every=cfg.eval_every, eval_batch_size=256, device=device, seed=seed,
        progress=progress, desc=f"{name} s{seed}",
    )  # fmt: skip
    evals = {"valid": make_batch(data.tokenizer, data.valid, name)}
    run_dir = None if out_dir is None else out_dir / f"{name}-s{seed}-{cfg.key(seed, data.tag)}"
    return train(model, source, tcfg, evals=evals, loss_fn=masked_lm_loss, out_dir=run_dir)


# -- chained greedy inference ------------------------------------------------------------------------


def _pad(rows: Sequence[list[int]], pad: int) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out, torch.tensor([len(r) for r in rows])


@torch.no_grad()
def generate(
    model: Transformer,
    prompts: Sequence[list[int]],
    end_token: int,
    max_new_tokens: int,
    batch_size: int = 200,
) -> list[tuple[list[int], bool]]:
    """Greedy continuation of every prompt (without the end token) and whether the end token came.
    Prompts that leave no room in the model's context get an empty, unfinished continuation."""
    n_ctx = model.cfg.n_ctx
    device = next(model.parameters()).device
    results: list[tuple[list[int], bool]] = [([], False)] * len(prompts)
    fits = [i for i, p in enumerate(prompts) if 0 < len(p) < n_ctx]
    was_training = model.training
    model.eval()
    for start in range(0, len(fits), batch_size):
        idx = fits[start : start + batch_size]
        tokens, lengths = _pad([prompts[i] for i in idx], pad=0)
        room = min(max_new_tokens, n_ctx - tokens.shape[1])
        if room < 1:  # the batch's longest prompt fills the context: decode those one by one
            for i in idx:
                results[i] = generate(model, [prompts[i]], end_token, max_new_tokens, 1)[0]
            continue
        dec = greedy_decode(model, tokens.to(device), lengths.to(device), room, end_token, pad_token=0)
        for j, i in enumerate(idx):
            gen = dec.generated(j)
            done = bool(dec.finished[j])
            results[i] = (gen[:-1] if done else gen, done)
    model.train(was_training)
    return results


def decompose(
    decomposer: Transformer,
    tok: WordTokenizer,
    problems: Sequence[WordProblem],
    batch_size: int = 200,
    max_new_tokens: int | None = None,
) -> list[list[list[int]]]:
    """The decomposer's sub-questions (token ids, one list per sub-question) for every problem."""
    prompts = [tok.encode(p.question) + [tok[SEP]] for p in problems]
    out = []
    for ids, _ in generate(decomposer, prompts, tok[END], max_new_tokens or decomposer.cfg.n_ctx, batch_size):
        subs, cur = [], []
        for t in ids:
            if t == tok[NL]:
                subs.append(cur)
                cur = []
            else:
                cur.append(t)
        if cur:
            subs.append(cur)
        out.append(subs)
    return out


def solve(
    solver: Transformer,
    tok: WordTokenizer,
    problems: Sequence[WordProblem],
    sub_questions: Sequence[Sequence[list[int]]],
    batch_size: int = 200,
    max_new_tokens: int | None = None,
) -> list[list[list[int]]]:
    """The solver's answer to each sub-question in turn, fed its own earlier answers (greedy)."""
    contexts = [tok.encode(p.question) + [tok[SEP]] for p in problems]
    answers: list[list[list[int]]] = [[] for _ in problems]
    alive = list(range(len(problems)))
    for k in range(max((len(s) for s in sub_questions), default=0)):
        rows = [i for i in alive if len(sub_questions[i]) > k]
        if not rows:
            break
        prompts = [contexts[i] + list(sub_questions[i][k]) + [tok[QMARK]] for i in rows]
        generated = generate(solver, prompts, tok[NL], max_new_tokens or solver.cfg.n_ctx, batch_size)
        alive = []
        for i, prompt, (ids, done) in zip(rows, prompts, generated, strict=True):
            answers[i].append(ids)
            if done:  # an unfinished answer ends the chain (the context is full)
                contexts[i] = prompt + ids + [tok[NL]]
                alive.append(i)
    return answers


def chain_answer(tok: WordTokenizer, sub_answers: Sequence[list[int]]) -> str | None:
    """The final answer of a decomposer + solver chain: the last number of the last sub-answer."""
    return last_number(tok.decode(sub_answers[-1])) if sub_answers else None


def cot_answers(
    cot: Transformer,
    tok: WordTokenizer,
    problems: Sequence[WordProblem],
    batch_size: int = 200,
    max_new_tokens: int | None = None,
) -> list[str | None]:
    prompts = [tok.encode(p.question) + [tok[SEP]] for p in problems]
    gens = generate(cot, prompts, tok[END], max_new_tokens or cot.cfg.n_ctx, batch_size)
    texts = [tok.decode(ids).replace(NL, "\n") for ids, _ in gens]
    return [cot_answer(t) for t in texts]


def evaluate(
    models: dict[str, Transformer],
    tok: WordTokenizer,
    problems: Sequence[WordProblem],
    seed: int,
    batch_size: int = 200,
    limits: dict[str, int] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Exact match by number of steps for every method (``results``: method, n_steps, accuracy,
    seed, n) and one row per problem and method (``predictions``). ``limits`` caps the tokens each
    model generates (default: up to its context)."""
    lim = dict(limits or {})
    truth = [[tok.encode(s) for s in p.sub_questions] for p in problems]
    subs = decompose(models["decomposer"], tok, problems, batch_size, lim.get("decomposer"))
    solver, n_solve = models["solver"], lim.get("solver")
    predicted = {
        "cot": cot_answers(models["cot"], tok, problems, batch_size, lim.get("cot")),
        "decomposer_solver": [
            chain_answer(tok, a) for a in solve(solver, tok, problems, subs, batch_size, n_solve)
        ],
        "oracle_solver": [
            chain_answer(tok, a) for a in solve(solver, tok, problems, truth, batch_size, n_solve)
        ],
    }
    rows = []
    for i, p in enumerate(problems):
        for method, preds in predicted.items():
            rows.append({"method": method, "problem": i, "n_steps": p.n_steps, "answer": p.answer,
                         "predicted": preds[i], "correct": same_number(preds[i], p.answer)})  # fmt: skip
        rows.append({"method": "decomposer", "problem": i, "n_steps": p.n_steps, "answer": p.answer,
                     "predicted": " | ".join(tok.decode(s) for s in subs[i]),
                     "correct": subs[i] == truth[i]})  # fmt: skip
    pred = pd.DataFrame(rows).assign(seed=seed)
    res = (
        pred.groupby(["method", "n_steps"], sort=False)
        .correct.agg(accuracy="mean", n="size")
        .reset_index()
        .assign(seed=seed)
    )
    res["method"] = pd.Categorical(res.method, METHODS, ordered=True)
    res = res.sort_values(["method", "n_steps"]).reset_index(drop=True)
    res["method"] = res.method.astype(str)
    return res[["method", "n_steps", "accuracy", "seed", "n"]], pred


def run_seed(
    cfg: DecomposeConfig,
    seed: int,
    out_dir: Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    given: tuple[Sequence[WordProblem], Sequence[WordProblem]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Data (``given`` as in :func:`make_data`), the three trainings and the evaluation of one
    seed: (results, predictions, training table with one row per model: steps, seconds, final
    validation loss and token accuracy)."""
    data = make_data(cfg, seed, given)
    models, rows = {}, []
    for name in MODELS:
        r = train_model(name, cfg, data, seed, out_dir, device, progress)
        models[name] = r.module
        rows.append({"model": name, "seed": seed, "steps": r.steps_done, "train_seconds": r.wall_time,
                     "n_params": sum(p.numel() for p in r.module.parameters()),
                     "valid_token_accuracy": r.final("valid", "token_accuracy"),
                     "valid_loss": r.final("valid", "loss")})  # fmt: skip
    results, predictions = evaluate(
        models, data.tokenizer, data.test, seed, cfg.decode_batch_size, data.limits
    )
    return results, predictions, pd.DataFrame(rows)
