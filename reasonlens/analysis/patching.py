"""Activation patching of the residual stream, and counterfactual prompts for the matching task.

The patching loop is TransformerLens's (``transformer_lens.patching.generic_activation_patch``,
which works on our model unchanged); this module builds the counterfactuals, the metric and the
tidy table around it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import patching

from reasonlens.models.modes import eval_mode
from reasonlens.probes.collect import hook_layer
from reasonlens.tasks import matching
from reasonlens.tasks.matching import MatchingDataset

COUNTERFACTUALS = ("child", "query")
SITES = ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")  # per block, in depth order
DIRECTIONS = ("denoise", "noise")
PATCHING_COLUMNS = [
    "hook", "layer", "position", "score", "clean_logit_diff", "corrupt_logit_diff", "n_examples",
]  # fmt: skip


def with_hop_layout(dataset: MatchingDataset, hop_pairs: Sequence[int]) -> MatchingDataset:
    """The examples whose hop ``j`` is held by pair ``hop_pairs[j]`` (for j < len(hop_pairs)),
    so that a position means the same thing in every example (e.g. for averaging patching)."""
    want = torch.tensor(list(hop_pairs), dtype=torch.long)
    if want.numel() == 0 or want.numel() > dataset.hop_pairs.shape[1]:
        raise ValueError(f"hop_pairs must give 1..{dataset.hop_pairs.shape[1]} pair indices; got {hop_pairs}")
    if want.min() < 0 or want.max() >= dataset.n_pairs or len(set(want.tolist())) != want.numel():
        raise ValueError(
            f"hop_pairs must be distinct pair indices in [0, {dataset.n_pairs}); got {hop_pairs}"
        )
    keep = (dataset.hop_pairs[:, : want.numel()] == want).all(dim=1)
    return dataset[torch.nonzero(keep).squeeze(1)]


def matching_counterfactual(
    dataset: MatchingDataset, kind: str = "child", seed: int = 0
) -> tuple[Int[Tensor, "n seq_len"], Int[Tensor, " n"]]:
    """Corrupted inputs and their answers, one per example, differing from the clean prompt in one
    token:

    - ``"child"``: the child of the pair holding the last hop (the answer token) is replaced by a
      token that is not in the example, drawn like the split's children (same residue rule), so
      the corrupted answer is that token;
    - ``"query"`` (single chain only): the same pairs with another chain node as the query, one
      that has a ``k``-hop successor; the corrupted answer is that successor.
    """
    if not isinstance(dataset, MatchingDataset):
        raise ValueError(f"matching_counterfactual needs a MatchingDataset; got {type(dataset).__name__}")
    if kind not in COUNTERFACTUALS:
        raise ValueError(f"counterfactual kind must be one of {COUNTERFACTUALS}; got {kind!r}")
    rng = np.random.default_rng([seed, 3])
    inputs = dataset.inputs.clone()
    n = len(dataset)
    ar = torch.arange(n)
    k = dataset.steps
    if kind == "query":
        if dataset.kind != "single_chain":
            raise ValueError(f"the 'query' counterfactual needs single_chain examples; got {dataset.kind!r}")
        chain_len = dataset.chains.shape[1]
        start = (dataset.chains == dataset.paths[:, :1]).float().argmax(dim=1)  # query's chain index
        n_starts = chain_len - k  # valid query indices 0 .. chain_len - k - 1
        if int(n_starts.min()) < 2:
            raise ValueError("the 'query' counterfactual needs at least two possible queries per chain")
        offset = torch.from_numpy(rng.integers(1, n_starts.numpy()))  # 1 .. n_starts - 1
        new_start = (start + offset) % n_starts
        inputs[:, dataset.query_pos] = dataset.chains[ar, new_start]
        return inputs, dataset.chains[ar, new_start + k]
    pair = dataset.hop_pairs[ar, k - 1]
    parent = dataset.pairs[ar, pair, 0]
    residues = np.array(matching.TRAIN_RESIDUES if dataset.split == "train" else matching.TEST_RESIDUES)
    if dataset.split == "ood":
        residues = np.array(matching.OOD_RESIDUES)
    new = np.zeros(n, dtype=np.int64)
    tokens = dataset.tokens.numpy()
    for i in range(n):
        for _ in range(10_000):
            cand = (
                int(rng.integers(1, dataset.n_tokens + 1)) // 5 * 5
                + (int(parent[i]) + int(rng.choice(residues))) % 5
            )
            if 1 <= cand <= dataset.n_tokens and cand not in tokens[i]:
                new[i] = cand
                break
        else:  # pragma: no cover - the vocabulary is far larger than an example
            raise RuntimeError(f"could not draw a replacement child for example {i}")
    new_t = torch.from_numpy(new)
    inputs[ar, 2 * pair + 1] = new_t
    return inputs, new_t


def check_counterfactual(
    model: torch.nn.Module,
    clean_tokens: Tensor,
    corrupt_tokens: Tensor,
    clean_answers: Tensor,
    corrupt_answers: Tensor,
    readout: int,
) -> None:
    """Refuse, naming the value, a clean/corrupted prompt pair that patching cannot use: token
    tensors of different shapes or not ``[n, pos]``, answers that are not ``[n]`` tokens of the
    model's vocabulary, a readout position outside the prompt."""
    if clean_tokens.ndim != 2 or clean_tokens.shape != corrupt_tokens.shape:
        raise ValueError(
            f"clean and corrupt tokens must both be [n, pos]; got {tuple(clean_tokens.shape)} and "
            f"{tuple(corrupt_tokens.shape)}"
        )
    n, n_pos = clean_tokens.shape
    for name, value in (("clean_answers", clean_answers), ("corrupt_answers", corrupt_answers)):
        if not isinstance(value, Tensor) or value.shape != (n,):
            raise ValueError(f"{name} must be a [n] token tensor with n={n}")
        if n and not 0 <= int(value.min()) <= int(value.max()) < model.cfg.d_vocab_out:
            raise ValueError(f"{name} must be tokens in 0..{model.cfg.d_vocab_out - 1}")
    if not -n_pos <= readout < n_pos:
        raise ValueError(f"readout {readout} is outside the {n_pos} positions")


def logit_diff(
    logits: Float[Tensor, "n pos vocab"], good: Int[Tensor, " n"], bad: Int[Tensor, " n"], position: int = -1
) -> Float[Tensor, " n"]:
    """``logit[good] - logit[bad]`` at ``position``, per example."""
    ar = torch.arange(logits.shape[0], device=logits.device)
    last = logits[:, position]
    return last[ar, good.to(logits.device)] - last[ar, bad.to(logits.device)]


def block_site_hooks(model: torch.nn.Module, sites: Sequence[str]) -> list[str]:
    """``blocks.{l}.hook_{site}`` for every layer and every named site the model has, in depth order;
    a ValueError naming an unknown site, or if none of them exists in the model."""
    if isinstance(sites, str):
        sites = [sites]
    sites = list(sites)
    bad = [s for s in sites if s not in SITES]
    if bad or not sites:
        raise ValueError(f"sites must be names from {SITES}; got {sites}")
    hooks = [
        f"blocks.{layer}.hook_{site}"
        for layer in range(model.cfg.n_layers)
        for site in SITES
        if site in sites and f"blocks.{layer}.hook_{site}" in model.hook_dict
    ]
    if not hooks:
        raise ValueError(f"the model has none of the sites {sites}")
    return hooks


def patch_each_position(
    model: torch.nn.Module,
    tokens: Int[Tensor, "n pos"],
    source: Mapping[str, Tensor],
    metric: Callable[[Tensor], Tensor],
    hooks: Sequence[str],
) -> Float[Tensor, "hook pos"]:
    """``metric(logits)`` of ``tokens`` run with one hook's activation at one position replaced by
    ``source``'s, for every hook and position: one forward pass each (TransformerLens's
    ``generic_activation_patch`` loop, without its progress bar per hook)."""
    n_pos = tokens.shape[1]
    out = torch.empty(len(hooks), n_pos)
    for i, hook in enumerate(hooks):
        for pos in range(n_pos):

            def setter(act: Tensor, hook: object, pos: int = pos) -> Tensor:
                act = act.clone()
                act[:, pos] = source[hook.name][:, pos]
                return act

            out[i, pos] = metric(model.run_with_hooks(tokens, fwd_hooks=[(hook, setter)])).item()
    return out


@torch.no_grad()
def activation_patching(
    model: torch.nn.Module,
    clean_tokens: Int[Tensor, "n pos"],
    corrupt_tokens: Int[Tensor, "n pos"],
    clean_answers: Int[Tensor, " n"],
    corrupt_answers: Int[Tensor, " n"],
    direction: str = "denoise",
    readout: int = -1,
    sites: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Patch the residual stream at every (layer, position) and measure the answer's logit difference.

    The residual sites are ``blocks.{l}.hook_resid_pre`` for every layer and the last block's
    ``hook_resid_post``; with ``sites`` (names from :data:`SITES`, e.g. ``("attn_out", "mlp_out")``)
    they are instead ``blocks.{l}.hook_{site}`` for every layer and every named site the model has
    (an attention-only model has no ``mlp_out``). With ``direction="denoise"`` the corrupted
    prompt runs and one clean activation is patched in; with ``"noise"`` the clean prompt runs and
    one corrupted activation is patched in. ``LD = logit[clean answer] - logit[corrupt answer]``
    at ``readout``, averaged over examples, and
    ``score = (LD_patched - LD_corrupt) / (LD_clean - LD_corrupt)``: the fraction of the
    clean-vs-corrupt difference the patched run shows (1 = behaves like the clean
    run, 0 = like the corrupted one). One tidy row per (hook, position).
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}; got {direction!r}")
    if clean_tokens.shape != corrupt_tokens.shape or clean_tokens.ndim != 2:
        raise ValueError(
            f"clean and corrupt tokens must both be [n, pos]; got {tuple(clean_tokens.shape)} and "
            f"{tuple(corrupt_tokens.shape)}"
        )
    n = clean_tokens.shape[0]
    if clean_answers.shape != (n,) or corrupt_answers.shape != (n,):
        raise ValueError(f"clean and corrupt answers must be [n] with n={n}")
    site_hooks = None if sites is None else block_site_hooks(model, sites)
    device = next(model.parameters()).device
    clean_tokens, corrupt_tokens = clean_tokens.to(device), corrupt_tokens.to(device)
    with eval_mode(model):  # TransformerLens 4's patching refuses a model in training mode
        n_layers, n_pos = model.cfg.n_layers, clean_tokens.shape[1]
        hooks = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
        hooks.append(f"blocks.{n_layers - 1}.hook_resid_post")
        hooks = hooks if site_hooks is None else site_hooks
        # Caching only the residual stream keeps the fused attention path, so the clean and corrupted
        # runs are computed exactly as the patched runs are (a full patch reproduces them bit for bit).
        clean_logits, clean_cache = model.run_with_cache(clean_tokens, names_filter=hooks)
        corrupt_logits, corrupt_cache = model.run_with_cache(corrupt_tokens, names_filter=hooks)
        ld_clean = logit_diff(clean_logits, clean_answers, corrupt_answers, readout).mean().item()
        ld_corrupt = logit_diff(corrupt_logits, clean_answers, corrupt_answers, readout).mean().item()
        if abs(ld_clean - ld_corrupt) < 1e-9:
            raise ValueError("clean and corrupted runs give the same logit difference; nothing to restore")

        def metric(logits: Tensor) -> Tensor:
            ld = logit_diff(logits, clean_answers, corrupt_answers, readout).mean()
            return (ld - ld_corrupt) / (ld_clean - ld_corrupt)

        run_tokens, source = (
            (corrupt_tokens, clean_cache) if direction == "denoise" else (clean_tokens, corrupt_cache)
        )
        if site_hooks is None:
            pre = patching.get_act_patch_resid_pre(model, run_tokens, source, metric)  # [n_layers, pos]
            last = pd.DataFrame({"layer": [n_layers - 1] * n_pos, "pos": list(range(n_pos))})
            post = patching.generic_activation_patch(
                model,
                run_tokens,
                source,
                metric,
                patching.layer_pos_patch_setter,
                "resid_post",
                index_df=last,
            )
            values = torch.cat([pre.cpu(), post.cpu()[None]], dim=0)
        else:
            values = patch_each_position(model, run_tokens, source, metric, hooks)
    rows = [
        {
            "hook": hook, "layer": hook_layer(hook), "position": pos, "score": float(values[i, pos]),
            "clean_logit_diff": ld_clean, "corrupt_logit_diff": ld_corrupt, "n_examples": n,
        }
        for i, hook in enumerate(hooks)
        for pos in range(n_pos)
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=PATCHING_COLUMNS)
