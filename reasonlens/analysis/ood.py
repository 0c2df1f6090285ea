"""Why matching models fail on OOD tokens: embedding scale, and what the wrong answers are.

OOD examples of the matching tasks (:mod:`reasonlens.tasks.matching`) draw their chain from tokens
``n_tokens+1 .. 2*n_tokens``, which never occur in training inputs, so their embedding rows keep
their initial values while the trained (ID) rows ``1 .. n_tokens`` grow. This module measures

- :func:`embedding_norms`: the mean row norm of the ID, OOD and position embeddings and their
  ratios (cheap: usable during training, see :func:`embedding_norm_monitor`);
- :func:`ood_accuracy`: OOD accuracy as measured (``raw``), with every OOD row rescaled to the
  mean ID row norm (``rescaled``) and with the OOD rows replaced by seeded random directions at
  that norm (``random_directions``), each on a copy of the model (the model is never changed);
- :func:`ood_answers`: what the model answers on OOD examples: the ``answer``, the first-hop node
  (``hop1_node``, the query's child), another token of the context (``other_in_context``) or a
  token not in the context at all (``not_in_context``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from reasonlens.tasks import matching
from reasonlens.training import evaluate_lm

VARIANTS = ("raw", "rescaled", "random_directions")
CATEGORIES = ("answer", "hop1_node", "other_in_context", "not_in_context")


def token_ranges(n_tokens: int = matching.DEFAULT_N_TOKENS) -> tuple[range, range]:
    """The ID tokens ``1..n_tokens`` and the OOD tokens ``n_tokens+1..2*n_tokens``."""
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 1:
        raise ValueError(f"n_tokens must be a positive integer; got {n_tokens!r}")
    return range(1, n_tokens + 1), range(n_tokens + 1, 2 * n_tokens + 1)


def _check_vocab(model: nn.Module, n_tokens: int) -> None:
    if model.cfg.d_vocab < 2 * n_tokens + 1:
        raise ValueError(
            f"model d_vocab={model.cfg.d_vocab} has no OOD rows for n_tokens={n_tokens} "
            f"(needs d_vocab >= {2 * n_tokens + 1})"
        )


def row_norms(W: Float[Tensor, "rows d"]) -> Float[Tensor, " rows"]:
    return W.detach().float().norm(dim=-1)


@torch.no_grad()
def embedding_norms(model: nn.Module, n_tokens: int = matching.DEFAULT_N_TOKENS) -> dict[str, float]:
    """Mean row norms of the ID token, OOD token and position embeddings, and
    ``ood_id_ratio = ood_norm / id_norm``, ``pos_id_ratio = pos_norm / id_norm``."""
    _check_vocab(model, n_tokens)
    ids, oods = token_ranges(n_tokens)
    W_E = model.W_E
    id_norm = float(row_norms(W_E[ids.start : ids.stop]).mean())
    ood_norm = float(row_norms(W_E[oods.start : oods.stop]).mean())
    pos_norm = float(row_norms(model.W_pos).mean())
    tiny = 1e-30
    return {
        "id_norm": id_norm,
        "ood_norm": ood_norm,
        "pos_norm": pos_norm,
        "ood_id_ratio": ood_norm / max(id_norm, tiny),
        "pos_id_ratio": pos_norm / max(id_norm, tiny),
    }


def embedding_norm_monitor(n_tokens: int = matching.DEFAULT_N_TOKENS) -> Callable[[nn.Module], dict]:
    """A ``monitors`` entry for :func:`reasonlens.training.train`: :func:`embedding_norms` at every
    evaluation (the ``embedding`` split of ``metrics.csv`` / ``curves.csv``)."""

    def monitor(module: nn.Module) -> dict[str, float]:
        return embedding_norms(module, n_tokens)

    return monitor


@torch.no_grad()
def with_ood_rows(
    model: nn.Module, variant: str, n_tokens: int = matching.DEFAULT_N_TOKENS, seed: int = 0
) -> nn.Module:
    """A copy of ``model`` whose OOD embedding rows are as trained (``raw``), rescaled each to the
    mean ID row norm (``rescaled``), or replaced by random directions (seeded by ``seed``,
    independent of torch's global RNG) at that norm (``random_directions``)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}; got {variant!r}")
    _check_vocab(model, n_tokens)
    out = copy.deepcopy(model)
    if variant == "raw":
        return out
    ids, oods = token_ranges(n_tokens)
    W_E = out.W_E
    target = row_norms(W_E[ids.start : ids.stop]).mean()
    rows = W_E[oods.start : oods.stop].float()
    if variant == "random_directions":
        gen = torch.Generator().manual_seed(seed)
        rows = torch.randn(rows.shape, generator=gen).to(rows.device)
    rows = rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-30) * target
    W_E[oods.start : oods.stop] = rows.to(W_E.dtype)
    return out


def ood_data(n: int = 2000, seed: int | Sequence[int] = 0, **task: object) -> matching.MatchingDataset:
    """``n`` OOD examples of the task (Type 1, k=2, seq_len 13 unless ``task`` says otherwise)."""
    return matching.generate(n, split="ood", seed=seed, **task)


def ood_accuracy(
    model: nn.Module,
    data: matching.MatchingDataset,
    variants: Sequence[str] = VARIANTS,
    seed: int = 0,
) -> pd.DataFrame:
    """Accuracy on ``data`` (OOD examples) for each variant of :func:`with_ood_rows`; one row per
    variant with the OOD row norm it used and the ID norm."""
    rows = []
    for variant in variants:
        m = with_ood_rows(model, variant, data.n_tokens, seed=seed)
        norms = embedding_norms(m, data.n_tokens)
        acc = evaluate_lm(m, data.batch())["accuracy"]
        rows.append(
            {
                "variant": variant,
                "accuracy": acc,
                "n": len(data),
                "ood_norm": norms["ood_norm"],
                "id_norm": norms["id_norm"],
            }
        )
    return pd.DataFrame(rows)


def classify_answers(predictions: Int[Tensor, " n"], data: matching.MatchingDataset) -> Int[Tensor, " n"]:
    """Index into :data:`CATEGORIES` for each prediction: the answer, the first-hop node
    (``paths[:, 1]``), another token of the input, or none of those."""
    pred = predictions.to(data.tokens.device).long()
    answer, hop1 = data.answers, data.paths[:, 1]
    in_context = (data.inputs == pred[:, None]).any(dim=1)
    out = torch.full_like(pred, CATEGORIES.index("not_in_context"))
    out[in_context] = CATEGORIES.index("other_in_context")
    out[pred == hop1] = CATEGORIES.index("hop1_node")
    out[pred == answer] = CATEGORIES.index("answer")
    return out


@torch.no_grad()
def predictions(
    model: nn.Module, data: matching.MatchingDataset, batch_size: int = 2048
) -> Int[Tensor, " n"]:
    """The model's argmax token at the answer position of every example."""
    was = model.training
    model.eval()
    outs = []
    for i in range(0, len(data), batch_size):
        logits = model(data.inputs[i : i + batch_size])
        outs.append(logits[:, data.answer_pos].argmax(-1).cpu())
    model.train(was)
    return torch.cat(outs)


def ood_answers(
    model: nn.Module, data: matching.MatchingDataset, variants: Sequence[str] = ("raw",), seed: int = 0
) -> pd.DataFrame:
    """Counts and fractions of each answer category (:data:`CATEGORIES`) on ``data``, per variant
    of :func:`with_ood_rows`: one row per (variant, category)."""
    rows = []
    for variant in variants:
        m = with_ood_rows(model, variant, data.n_tokens, seed=seed)
        codes = classify_answers(predictions(m, data), data)
        counts = torch.bincount(codes, minlength=len(CATEGORIES))
        for i, cat in enumerate(CATEGORIES):
            c = int(counts[i])
            rows.append({"variant": variant, "category": cat, "count": c, "fraction": c / max(len(data), 1)})
    return pd.DataFrame(rows)
