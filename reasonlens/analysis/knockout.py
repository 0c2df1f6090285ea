"""Attention knockout: remove chosen attention edges and measure what the answer loses.

An edge is ``(layer, head, query position, key position)``: the weight with which that head, at
the query position, reads the key position (``blocks.{layer}.attn.hook_pattern``). ``head=None``
means every head of the layer. Two ways to remove it:

- ``"zero"``: set the weight to 0 and leave the rest of the row as it is (the row then sums to
  less than 1: the head reads less in total);
- ``"renormalize"``: set it to 0 and rescale the rest of the row to sum to 1 (the head reads the
  other positions instead; a row with nothing left stays all zero).

The metric is the answer's logit at ``readout`` or, with ``counter`` tokens, the logit difference
``logit[answer] - logit[counter]``, averaged over examples; ``effect = clean - knocked`` (positive:
the edge helps the answer). The clean run hooks the same patterns (without changing them), so it is
computed exactly as the knocked runs are.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from reasonlens.analysis.patching import logit_diff
from reasonlens.models.modes import eval_mode

MODES = ("zero", "renormalize")
Edge = tuple[int, int | None, int, int]
KNOCKOUT_COLUMNS = ["n_edges", "mode", "metric", "clean", "knocked", "effect", "n_examples"]
RANK_COLUMNS = [
    "rank", "layer", "head", "query_position", "key_position", "effect", "clean", "knocked", "attention",
    "mode", "metric", "n_examples",
]  # fmt: skip


def _check(
    model: torch.nn.Module,
    tokens: Int[Tensor, "n pos"],
    answers: Int[Tensor, " n"],
    counter: Int[Tensor, " n"] | None,
    mode: str,
) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [n, pos]; got shape {tuple(tokens.shape)}")
    n = tokens.shape[0]
    for name, value in (("answers", answers), ("counter", counter)):
        if value is not None and (not isinstance(value, Tensor) or value.shape != (n,)):
            raise ValueError(f"{name} must be a [n] token tensor with n={n}")
        if value is not None and n and not 0 <= int(value.min()) <= int(value.max()) < model.cfg.d_vocab_out:
            raise ValueError(f"{name} must be tokens in 0..{model.cfg.d_vocab_out - 1}")


def _check_edges(model: torch.nn.Module, edges: Iterable[Edge], n_pos: int) -> list[Edge]:
    cfg = model.cfg
    out = []
    for edge in edges:
        if len(edge) != 4:
            raise ValueError(f"an edge is (layer, head, query position, key position); got {edge!r}")
        layer, head, q, k = edge
        if not 0 <= layer < cfg.n_layers:
            raise ValueError(f"edge {edge!r}: layer {layer} is outside 0..{cfg.n_layers - 1}")
        if head is not None and not 0 <= head < cfg.n_heads:
            raise ValueError(f"edge {edge!r}: head {head} is outside 0..{cfg.n_heads - 1}")
        if not (-n_pos <= q < n_pos and -n_pos <= k < n_pos):
            raise ValueError(f"edge {edge!r}: positions must lie in the {n_pos} input positions")
        q, k = q % n_pos, k % n_pos
        if k > q:
            raise ValueError(f"edge {edge!r}: key position {k} is after query position {q} (causal mask)")
        out.append((layer, head, q, k))
    if not out:
        raise ValueError("no edges to knock out")
    return out


def edge_masks(
    edges: Sequence[Edge], n_heads: int, n_pos: int, device: torch.device | str = "cpu"
) -> dict[int, Bool[Tensor, "head query key"]]:
    """Per layer, the attention entries to remove."""
    masks: dict[int, Tensor] = defaultdict(lambda: torch.zeros(n_heads, n_pos, n_pos, dtype=torch.bool))
    for layer, head, q, k in edges:
        masks[layer][slice(None) if head is None else head, q, k] = True
    return {layer: m.to(device) for layer, m in masks.items()}


def knock_out(
    pattern: Float[Tensor, "batch head query key"], mask: Bool[Tensor, "*b head query key"], mode: str
) -> Float[Tensor, "batch head query key"]:
    """``pattern`` without the masked entries, zeroed or with each row renormalised (see module)."""
    kept = pattern.masked_fill(mask, 0.0)
    if mode == "zero":
        return kept
    total = kept.sum(-1, keepdim=True)
    return torch.where(total > 0, kept / total.clamp_min(torch.finfo(kept.dtype).tiny), kept)


def _metric(
    logits: Float[Tensor, "n pos vocab"], answers: Tensor, counter: Tensor | None, readout: int
) -> Float[Tensor, " n"]:
    if counter is None:
        ar = torch.arange(logits.shape[0], device=logits.device)
        return logits[ar, readout, answers.to(logits.device)]
    return logit_diff(logits, answers, counter, readout)


def _identity_hooks(model: torch.nn.Module) -> list[tuple[str, object]]:
    """A no-op hook on every layer's pattern: the explicit attention path the knocked runs take."""
    return [(f"blocks.{layer}.attn.hook_pattern", lambda p, hook: p) for layer in range(model.cfg.n_layers)]


def _run(
    model: torch.nn.Module,
    tokens: Int[Tensor, "n pos"],
    masks: dict[int, Bool[Tensor, "head query key"]],
    mode: str,
    answers: Int[Tensor, " n"],
    counter: Int[Tensor, " n"] | None,
    readout: int,
) -> Float[Tensor, " n"]:
    """The metric per example, with ``masks`` knocked out (none: the clean run on the same path)."""
    hooks = _identity_hooks(model)
    for layer, mask in masks.items():
        hooks.append((f"blocks.{layer}.attn.hook_pattern", lambda p, hook, m=mask: knock_out(p, m, mode)))
    logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    return _metric(logits, answers, counter, readout)


@torch.no_grad()
def attention_knockout(
    model: torch.nn.Module,
    tokens: Int[Tensor, "n pos"],
    edges: Iterable[Edge],
    answers: Int[Tensor, " n"],
    counter: Int[Tensor, " n"] | None = None,
    mode: str = "zero",
    readout: int = -1,
) -> pd.DataFrame:
    """Knock out all of ``edges`` at once; one tidy row with the clean and knocked metric (the
    answer's logit, or its logit difference against ``counter``) and ``effect = clean - knocked``."""
    _check(model, tokens, answers, counter, mode)
    edges = _check_edges(model, edges, tokens.shape[1])
    device = next(model.parameters()).device
    tokens = tokens.to(device)
    masks = edge_masks(edges, model.cfg.n_heads, tokens.shape[1], device)
    with eval_mode(model):
        clean = _run(model, tokens, {}, mode, answers, counter, readout).mean().item()
        knocked = _run(model, tokens, masks, mode, answers, counter, readout).mean().item()
    metric = "logit" if counter is None else "logit_diff"
    row = [len(edges), mode, metric, clean, knocked, clean - knocked, tokens.shape[0]]
    return pd.DataFrame([row], columns=KNOCKOUT_COLUMNS)


@torch.no_grad()
def rank_edges(
    model: torch.nn.Module,
    tokens: Int[Tensor, "n pos"],
    answers: Int[Tensor, " n"],
    layers: Sequence[int] | None = None,
    query_positions: Sequence[int] | None = None,
    counter: Int[Tensor, " n"] | None = None,
    mode: str = "zero",
    heads: Sequence[int] | None = None,
    readout: int = -1,
) -> pd.DataFrame:
    """Knock out every single edge into ``query_positions`` (default: the readout position) in
    ``layers`` (default: all) and ``heads`` (default: all), one at a time; one tidy row per edge,
    sorted by ``effect`` (largest first, ``rank`` 0), with the edge's mean clean attention weight.
    """
    _check(model, tokens, answers, counter, mode)
    n_pos = tokens.shape[1]
    cfg = model.cfg
    layers = list(range(cfg.n_layers)) if layers is None else list(layers)
    heads = list(range(cfg.n_heads)) if heads is None else list(heads)
    queries = [readout % n_pos] if query_positions is None else [q % n_pos for q in query_positions]
    edges = [(layer, h, q, k) for layer in layers for h in heads for q in queries for k in range(q + 1)]
    edges = _check_edges(model, edges, n_pos)
    device = next(model.parameters()).device
    tokens = tokens.to(device)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in sorted(set(layers))]
    metric = "logit" if counter is None else "logit_diff"
    rows = []
    with eval_mode(model):
        _, cache = model.run_with_cache(tokens, names_filter=names)
        clean = _run(model, tokens, {}, mode, answers, counter, readout).mean().item()
        for edge in edges:
            masks = edge_masks([edge], cfg.n_heads, n_pos, device)
            knocked = _run(model, tokens, masks, mode, answers, counter, readout).mean().item()
            layer, h, q, k = edge
            attention = cache[f"blocks.{layer}.attn.hook_pattern"][:, h, q, k].mean().item()
            rows.append(
                [layer, h, q, k, clean - knocked, clean, knocked, attention, mode, metric, len(tokens)]
            )
    df = pd.DataFrame(rows, columns=RANK_COLUMNS[1:])
    df = df.sort_values("effect", ascending=False, kind="stable").reset_index(drop=True)
    df.insert(0, "rank", range(len(df)))
    return df
