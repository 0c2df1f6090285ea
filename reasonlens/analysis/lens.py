"""Logit lens: the unembedding applied to the residual stream after every layer.

Depth 0 is the embeddings (token + position, what block 0 reads) and depth ``l + 1`` the stream
after block ``l``; the last depth is the stream the model unembeds. How a depth's stream is read
depends on the norm placement:

- pre-LN: through the model's final LayerNorm (``ln_final``), then the unembedding, as the model
  reads its last stream;
- post-LN: every block ends in a LayerNorm (``hook_resid_post`` is taken after it), so the stream
  at a depth is already what the next layer reads; the unembedding is applied to it directly
  (there is no final LayerNorm to fold or borrow). Depth 0, the raw embeddings, is what block 0
  reads, also read directly;
- no norm: the unembedding directly.

In all three cases the lens at the last depth equals the model's logits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from reasonlens.models.modes import eval_mode
from reasonlens.tasks.matching import MatchingDataset

LENS_COLUMNS = [
    "depth", "stream", "position", "target", "mean_rank", "mean_prob", "top1_acc", "mean_logit",
    "n_examples",
]  # fmt: skip


def depth_label(depth: int) -> str:
    """``"embed"`` for depth 0, ``"block l"`` for the stream after block ``l`` (depth ``l + 1``)."""
    return "embed" if depth == 0 else f"block {depth - 1}"


def _positions(positions: Sequence[int] | int | None, n_pos: int) -> list[int]:
    if positions is None:
        return [n_pos - 1]
    if isinstance(positions, int):
        positions = [positions]
    out = []
    for p in positions:
        if isinstance(p, bool) or not isinstance(p, int) or not -n_pos <= p < n_pos:
            raise ValueError(f"position {p!r} is outside the {n_pos} input positions")
        out.append(p % n_pos)
    if not out:
        raise ValueError("positions is empty")
    return out


@torch.no_grad()
def lens_logits(
    model: torch.nn.Module, tokens: Int[Tensor, "n pos"], positions: Sequence[int] | int | None = None
) -> Float[Tensor, "depth n n_positions vocab"]:
    """The logit lens at every depth (0 = embeddings, ``l + 1`` = after block ``l``) and at
    ``positions`` (default: the last one), read as the module docstring describes."""
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [n, pos]; got shape {tuple(tokens.shape)}")
    pos = _positions(positions, tokens.shape[1])
    n_layers = model.cfg.n_layers
    hooks = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
    hooks.append(f"blocks.{n_layers - 1}.hook_resid_post")
    device = next(model.parameters()).device
    with eval_mode(model):
        # Caching only the residual stream keeps the fused attention path: the run is the model's own.
        _, cache = model.run_with_cache(tokens.to(device), names_filter=hooks)
        out = []
        for hook in hooks:
            resid = cache[hook][:, pos]
            if model.cfg.norm == "pre":
                resid = model.ln_final(resid)
            out.append(model.unembed(resid))
    return torch.stack(out)


def _target_stats(
    logits: Float[Tensor, "n vocab"], target: Int[Tensor, " n"]
) -> tuple[float, float, float, float, int]:
    keep = target >= 0  # -1: no such target in this example (e.g. a hop beyond its k)
    logits, target = logits[keep], target[keep]
    n = int(keep.sum())
    if n == 0:
        nan = float("nan")
        return nan, nan, nan, nan, 0
    own = logits.gather(1, target[:, None])  # [n, 1]
    rank = (logits > own).sum(1).float()  # 0 = the top token
    prob = logits.float().softmax(-1).gather(1, target[:, None]).squeeze(1)
    top1 = (rank == 0).float().mean().item()
    return rank.mean().item(), prob.mean().item(), top1, own.float().mean().item(), n


def logit_lens(
    model: torch.nn.Module,
    tokens: Int[Tensor, "n pos"],
    positions: Sequence[int] | int | None = None,
    answers: Int[Tensor, " n"] | None = None,
    extra_targets: Mapping[str, Int[Tensor, " n"]] | None = None,
) -> pd.DataFrame:
    """One tidy row per (depth, position, target): how the logit lens ranks a target token.

    Targets are ``"answer"`` (``answers``, when given) and each named ``extra_targets`` entry (one
    token per example; ``-1`` where an example has no such target, which is then left out of that
    row). Without any target, ``"final"`` is the model's own top prediction at that position.
    ``mean_rank`` (0 = the lens's top token), ``mean_prob`` (softmax over the vocabulary),
    ``top1_acc`` (rank 0) and ``mean_logit`` are averages over the examples; ``stream`` names the
    depth ("embed", "block l").
    """
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [n, pos]; got shape {tuple(tokens.shape)}")
    n = tokens.shape[0]
    targets: dict[str, Tensor] = {}
    if answers is not None:
        targets["answer"] = answers
    for name, value in (extra_targets or {}).items():
        if name in targets:
            raise ValueError(f"extra target {name!r} clashes with another target's name")
        targets[name] = value
    for name, value in targets.items():
        if not isinstance(value, Tensor) or value.shape != (n,):
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"target {name!r} must be a [n] token tensor with n={n}; got {shape}")
        if value.numel() and int(value.max()) >= model.cfg.d_vocab_out:
            raise ValueError(
                f"target {name!r} holds token {int(value.max())}, outside the model's "
                f"{model.cfg.d_vocab_out} output tokens"
            )
    pos = _positions(positions, tokens.shape[1])
    lens = lens_logits(model, tokens, pos)  # validates tokens
    if not targets:
        targets["final"] = lens[-1].argmax(-1)  # [n, n_positions]: one per position
    rows = []
    for depth in range(lens.shape[0]):
        for i, p in enumerate(pos):
            for name, value in targets.items():
                target = value[:, i] if value.ndim == 2 else value
                stats = _target_stats(lens[depth, :, i], target.to(lens.device).long())
                rows.append([depth, depth_label(depth), p, name, *stats])
    return pd.DataFrame(rows, columns=LENS_COLUMNS)


def hop_targets(dataset: MatchingDataset) -> dict[str, Int[Tensor, " n"]]:
    """The nodes on each example's hop path other than the answer: ``"query"`` and ``"hop j"``
    (the node reached after hop ``j``, for ``1 <= j < k``; ``-1`` where an example's ``k <= j``)."""
    targets = {"query": dataset.paths[:, 0]}
    for j in range(1, dataset.paths.shape[1] - 1):
        node = dataset.paths[:, j].clone()
        node[dataset.steps <= j] = -1  # at j == k the node is the answer itself
        if bool((node >= 0).any()):
            targets[f"hop {j}"] = node
    return targets


def matching_logit_lens(
    model: torch.nn.Module, dataset: MatchingDataset, positions: Sequence[int] | int | None = None
) -> pd.DataFrame:
    """:func:`logit_lens` on matching examples, at the answer position by default, with the
    answer and the query and intermediate hop nodes (:func:`hop_targets`) as targets."""
    if not isinstance(dataset, MatchingDataset):
        raise ValueError(f"matching_logit_lens needs a MatchingDataset; got {type(dataset).__name__}")
    if positions is None:
        positions = [dataset.answer_pos]
    return logit_lens(model, dataset.inputs, positions, dataset.answers, hop_targets(dataset))
