"""Collecting activations: a batched forward pass that keeps only the hooks and positions asked for."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from reasonlens.models.modes import eval_mode
from reasonlens.probes.store import ActivationStore

_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def resid_hooks(n_layers: int) -> list[str]:
    """The residual stream entering block 0 and leaving every block, in depth order."""
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{layer}.hook_resid_post" for layer in range(n_layers)]


def hook_layer(name: str) -> int:
    """The block index of a ``blocks.{l}.*`` hook name; -1 for hooks outside the blocks."""
    m = _BLOCK.match(name)
    return int(m.group(1)) if m else -1


def hook_label(name: str) -> str:
    """A short label: ``blocks.2.hook_resid_post`` -> ``resid_post 2``, ``hook_embed`` -> ``embed``."""
    m = _BLOCK.match(name)
    leaf = name.rsplit(".", 1)[-1].removeprefix("hook_")
    return f"{leaf} {m.group(1)}" if m else leaf


_STAGE = {
    "hook_resid_pre": 0,
    "hook_attn_out": 1,
    "hook_resid_mid": 2,
    "hook_mlp_out": 3,
    "hook_resid_post": 4,
}


def ordered_hooks(hooks: Iterable[str]) -> list[str]:
    """Distinct hook names in depth order: by block, then pre < attn_out < mid < mlp_out < post."""
    return sorted(set(hooks), key=lambda h: (hook_layer(h), _STAGE.get(h.rsplit(".", 1)[-1], 2), h))


def check_hooks(model: torch.nn.Module, hooks: Sequence[str]) -> list[str]:
    """The hook names as a list, or a ValueError naming the first one the model does not have or
    that is not a ``[batch, pos, ...]`` activation (attention patterns are not)."""
    if isinstance(hooks, str):
        hooks = [hooks]
    hooks = list(hooks)
    if not hooks:
        raise ValueError("hooks: no hook names given")
    for h in hooks:
        if h not in model.hook_dict:
            raise ValueError(f"hook {h!r} does not exist in this model (e.g. {resid_hooks(1)[0]!r})")
        if h.endswith(("hook_pattern", "hook_attn_scores")):
            raise ValueError(f"hook {h!r} is [batch, head, query, key]; probes need [batch, pos, ...] hooks")
    if len(set(hooks)) != len(hooks):
        raise ValueError(f"hooks: duplicate names in {hooks}")
    return hooks


def check_positions(positions: Sequence[int] | None, seq_len: int) -> list[int]:
    """Positions as non-negative ints (negative ones count from the end); all by default."""
    if positions is None:
        return list(range(seq_len))
    if isinstance(positions, int):
        positions = [positions]
    out = []
    for p in positions:
        if isinstance(p, bool) or not isinstance(p, int) or not -seq_len <= p < seq_len:
            raise ValueError(f"position {p!r} is out of range for sequences of length {seq_len}")
        out.append(p % seq_len)
    if not out or len(set(out)) != len(out):
        raise ValueError(f"positions must be a non-empty list without repeats; got {list(positions)}")
    return out


def _blocks_needed(model: torch.nn.Module, hooks: Sequence[str]) -> int | None:
    """``stop_at_layer`` that still runs every hook asked for (None: the whole model)."""
    n_layers = model.cfg.n_layers
    need = 0
    for h in hooks:
        layer = hook_layer(h)
        if layer >= 0:
            need = max(need, layer + 1)
        elif h not in ("hook_embed", "hook_pos_embed"):
            return None  # ln_final and friends: run everything
    return need if need < n_layers else None


@torch.no_grad()
def collect_activations(
    model: torch.nn.Module,
    tokens: Int[Tensor, "n pos"],
    hooks: Sequence[str] | None = None,
    positions: Sequence[int] | None = None,
    batch_size: int = 1024,
    path: str | os.PathLike | None = None,
    progress: bool = False,
) -> ActivationStore:
    """Run ``model`` over ``tokens`` in batches and keep ``hooks`` (default: :func:`resid_hooks`)
    at ``positions`` (default: all) in an :class:`ActivationStore`, on disk when ``path`` is given.

    Hooks must have ``[batch, pos, ...]`` activations (not attention patterns); trailing axes are
    flattened (``hook_z`` gives ``n_heads * d_head`` features). Only the requested hooks are cached
    (``names_filter``), the model stops after the last block a hook needs, and the unembedding
    never runs.
    """
    if tokens.ndim != 2 or tokens.shape[0] == 0:
        raise ValueError(f"tokens must be [n, pos] with n >= 1; got shape {tuple(tokens.shape)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    hooks = check_hooks(model, hooks if hooks is not None else resid_hooks(model.cfg.n_layers))
    positions = check_positions(positions, tokens.shape[1])
    stop = _blocks_needed(model, hooks)
    device = next(model.parameters()).device
    pos_index = torch.tensor(positions, device=device)
    with eval_mode(model):
        store = None
        n = tokens.shape[0]
        bar = tqdm(total=n, desc="collect", disable=not progress, leave=False, unit="ex")
        for start in range(0, n, batch_size):
            batch = tokens[start : start + batch_size].to(device)
            _, cache = model.run_with_cache(
                batch, names_filter=hooks, return_type=None, stop_at_layer=stop, return_cache_object=False
            )
            # [b, pos, ...] -> [b, positions, features]; per-head hooks are flattened over heads
            acts = {h: cache[h].index_select(1, pos_index).flatten(2).float().cpu().numpy() for h in hooks}
            if store is None:
                store = ActivationStore({h: a.shape[-1] for h, a in acts.items()}, n, positions, path=path)
            store.append(acts)
            bar.update(batch.shape[0])
        bar.close()
    return store
