"""Attribution patching: the first-order (gradient) approximation of activation patching, for every
site and position from one forward and one backward pass.

Activation patching (:func:`~reasonlens.analysis.activation_patching`) runs the model once per
(site, position). Its linear approximation patches them all at once on paper: with ``M`` the mean
logit difference of the base run and ``a`` one site's activation there,

    M(patched at site, position) - M(base)  ~=  sum_examples,d (a_other - a_base) * dM/da_base

(Nanda's attribution patching, in our reading). ``direction`` means what it means for activation
patching: ``"denoise"`` runs the corrupted prompt (base) and patches clean activations in,
``"noise"`` runs the clean prompt and patches corrupted ones in. The result has the columns of
activation patching (``score`` on the same scale: 1 = behaves like the clean run, 0 = like the
corrupted one) plus ``effect``, the approximate change of the logit difference against the base
run. Where the metric is linear in a site's activation (for example a no-norm, attention-only
model with a fixed attention pattern) the approximation is exact; elsewhere
:func:`compare_with_exact` says how far it agrees with the exact sweep.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from reasonlens.analysis.patching import (
    DIRECTIONS,
    SITES,
    activation_patching,
    block_site_hooks,
    check_counterfactual,
    logit_diff,
)
from reasonlens.models.modes import eval_mode
from reasonlens.probes.collect import hook_layer

ATTRIBUTION_COLUMNS = [
    "hook", "layer", "site", "position", "effect", "score", "clean_logit_diff", "corrupt_logit_diff",
    "n_examples",
]  # fmt: skip
COMPARISON_COLUMNS = [
    "hook", "layer", "site", "position", "effect_attribution", "effect_exact", "score_attribution",
    "score_exact", "clean_logit_diff", "corrupt_logit_diff", "n_examples",
]  # fmt: skip


def _check(
    model: torch.nn.Module,
    clean_tokens: Tensor,
    corrupt_tokens: Tensor,
    clean_answers: Tensor,
    corrupt_answers: Tensor,
    direction: str,
    readout: int,
) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}; got {direction!r}")
    check_counterfactual(model, clean_tokens, corrupt_tokens, clean_answers, corrupt_answers, readout)


def attribution_scores(
    model: torch.nn.Module,
    base_tokens: Int[Tensor, "n pos"],
    other: dict[str, Float[Tensor, "n pos d"]],
    clean_answers: Int[Tensor, " n"],
    corrupt_answers: Int[Tensor, " n"],
    readout: int = -1,
) -> tuple[dict[str, Float[Tensor, " pos"]], float]:
    """Per hook in ``other``, ``sum_examples,d (other - base) * dLD/dbase`` at every position, from
    one forward and one backward pass of ``base_tokens``; and the base run's mean LD."""
    acts: dict[str, Tensor] = {}

    def leaf(act: Tensor, hook: object) -> Tensor:  # every site then needs a gradient, frozen or not
        return act.detach().requires_grad_(True)

    def keep(act: Tensor, hook: object) -> Tensor:
        acts[hook.name] = act
        return act

    hooks = [("hook_embed", leaf), ("hook_pos_embed", leaf)] + [(name, keep) for name in other]
    with torch.enable_grad():
        logits = model.run_with_hooks(base_tokens, fwd_hooks=hooks)
        ld = logit_diff(logits, clean_answers, corrupt_answers, readout).mean()
        names = list(other)
        grads = torch.autograd.grad(ld, [acts[name] for name in names], allow_unused=True)
    out = {}
    for name, grad in zip(names, grads):
        diff = other[name].to(acts[name].dtype) - acts[name].detach()
        out[name] = (
            torch.zeros(diff.shape[1], device=diff.device) if grad is None else (diff * grad).sum(-1).sum(0)
        )
    return out, ld.item()


def attribution_patching(
    model: torch.nn.Module,
    clean_tokens: Int[Tensor, "n pos"],
    corrupt_tokens: Int[Tensor, "n pos"],
    clean_answers: Int[Tensor, " n"],
    corrupt_answers: Int[Tensor, " n"],
    direction: str = "denoise",
    readout: int = -1,
    sites: Sequence[str] = SITES,
) -> pd.DataFrame:
    """Attribution patching of ``blocks.{l}.hook_{site}`` for every layer, site and position (module
    docstring); one tidy row per (hook, position), on :func:`activation_patching`'s score scale."""
    _check(model, clean_tokens, corrupt_tokens, clean_answers, corrupt_answers, direction, readout)
    hooks = block_site_hooks(model, sites)
    n = clean_tokens.shape[0]
    device = next(model.parameters()).device
    clean_tokens, corrupt_tokens = clean_tokens.to(device), corrupt_tokens.to(device)
    with eval_mode(model):
        with torch.no_grad():
            clean_logits, clean_cache = model.run_with_cache(clean_tokens, names_filter=hooks)
            corrupt_logits, corrupt_cache = model.run_with_cache(corrupt_tokens, names_filter=hooks)
        ld_clean = logit_diff(clean_logits, clean_answers, corrupt_answers, readout).mean().item()
        ld_corrupt = logit_diff(corrupt_logits, clean_answers, corrupt_answers, readout).mean().item()
        if abs(ld_clean - ld_corrupt) < 1e-9:
            raise ValueError("clean and corrupted runs give the same logit difference; nothing to restore")
        base, other = (
            (corrupt_tokens, clean_cache) if direction == "denoise" else (clean_tokens, corrupt_cache)
        )
        scores, ld_base = attribution_scores(
            model, base, {h: other[h] for h in hooks}, clean_answers, corrupt_answers, readout
        )
    span = ld_clean - ld_corrupt
    rows = []
    for hook in hooks:
        for pos, effect in enumerate(scores[hook].cpu().tolist()):
            rows.append([
                hook, hook_layer(hook), hook.rsplit(".", 1)[-1].removeprefix("hook_"), pos, effect,
                (ld_base + effect - ld_corrupt) / span, ld_clean, ld_corrupt, n,
            ])  # fmt: skip
    return pd.DataFrame(rows, columns=ATTRIBUTION_COLUMNS)


def agreement(
    approx: Sequence[float] | pd.Series, exact: Sequence[float] | pd.Series, moved: float = 1e-3
) -> dict:
    """How far ``approx`` agrees with ``exact`` (matched entries): ``sign_agreement``, the fraction
    of the entries where the exact value moves (``|exact| > moved * max |exact|``) whose signs agree;
    ``spearman`` (all entries) and ``spearman_moved`` (those entries) rank correlations; ``pearson``;
    ``max_abs_error``; ``n`` and ``n_moved``."""
    a = pd.Series(list(approx), dtype=float)
    e = pd.Series(list(exact), dtype=float)
    if len(a) != len(e) or len(a) < 2:
        raise ValueError(f"agreement needs two matched series of 2+ values; got {len(a)} and {len(e)}")
    big = e.abs() > moved * float(e.abs().max())
    signs = (a[big] > 0) == (e[big] > 0)

    def corr(x: pd.Series, y: pd.Series, method: str) -> float:
        return float(x.corr(y, method=method)) if len(x) > 1 and x.std() > 0 and y.std() > 0 else float("nan")

    return {
        "sign_agreement": float(signs.mean()) if big.any() else float("nan"),
        "spearman": corr(a, e, "spearman"),
        "spearman_moved": corr(a[big], e[big], "spearman"),
        "pearson": corr(a, e, "pearson"),
        "max_abs_error": float((a - e).abs().max()),
        "n": len(a),
        "n_moved": int(big.sum()),
    }


def compare_with_exact(
    model: torch.nn.Module,
    clean_tokens: Int[Tensor, "n pos"],
    corrupt_tokens: Int[Tensor, "n pos"],
    clean_answers: Int[Tensor, " n"],
    corrupt_answers: Int[Tensor, " n"],
    direction: str = "denoise",
    readout: int = -1,
    sites: Sequence[str] = SITES,
) -> tuple[pd.DataFrame, dict]:
    """Attribution patching and exact activation patching of the same sites: one tidy row per
    (hook, position) with both (``effect_*``: change of the logit difference against the base run;
    ``score_*``: activation patching's scale), and their :func:`agreement` on the effects."""
    approx = attribution_patching(
        model, clean_tokens, corrupt_tokens, clean_answers, corrupt_answers, direction, readout, sites
    )
    exact = activation_patching(
        model, clean_tokens, corrupt_tokens, clean_answers, corrupt_answers, direction, readout, sites=sites
    )
    span = exact.clean_logit_diff - exact.corrupt_logit_diff
    exact = exact.assign(effect=(exact.score - (0.0 if direction == "denoise" else 1.0)) * span)
    table = approx.merge(
        exact[["hook", "position", "effect", "score"]],
        on=["hook", "position"],
        suffixes=("_attribution", "_exact"),
    )
    if len(table) != len(approx):  # pragma: no cover - both sweep the same hooks and positions
        raise RuntimeError("attribution and exact patching cover different sites")
    return table[COMPARISON_COLUMNS], agreement(table.effect_attribution, table.effect_exact)
