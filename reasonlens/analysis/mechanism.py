"""Every analysis of this package applied to one matching model: probes, attention scores, the
matching matrix, activation patching, path patching, attribution patching (with the exact sweep it
approximates) and one information-flow graph, as tidy tables."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from reasonlens.analysis.attention import attention_matching_scores
from reasonlens.analysis.attribution import agreement, compare_with_exact
from reasonlens.analysis.circuits import matching_matrix_variants, matching_scores
from reasonlens.analysis.flow import information_flow
from reasonlens.analysis.knockout import rank_edges
from reasonlens.analysis.lens import matching_logit_lens
from reasonlens.analysis.ood import VARIANTS, embedding_norms, ood_accuracy, ood_answers
from reasonlens.analysis.patching import activation_patching, matching_counterfactual, with_hop_layout
from reasonlens.analysis.path_patching import ALL_DOWNSTREAM, path_patching
from reasonlens.models.modes import eval_mode
from reasonlens.probes import probe_sweep
from reasonlens.probes.collect import hook_label, ordered_hooks
from reasonlens.probes.targets import hop_of
from reasonlens.tasks import matching
from reasonlens.training import evaluate_lm


@dataclass
class MechanismConfig:
    """What to measure on a matching model (Type 1 by default, as in the teaching run)."""

    n_examples: int = 10_000  # probes and attention scores
    n_patching: int = 500  # examples sharing one hop layout, for patching
    n_path: int = 200  # the first of those, for path patching (two runs per path and position)
    hop_layout: tuple[int, ...] = (1, 3)  # pair index holding hop 1, hop 2, ...
    split: str = "test"
    steps: int = 2
    seq_len: int = 13
    kind: str = "single_chain"
    n_eval: int = 2048  # examples per split for the accuracy table
    seed: int = 0

    def validate(self) -> None:
        for name in ("n_examples", "n_patching", "n_eval", "n_path"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 10:
                raise ValueError(f"MechanismConfig.{name} must be an integer >= 10; got {v!r}")
        # the task settings are validated by the generator itself
        matching.generate(1, self.split, self.steps, self.seq_len, self.kind, seed=0)
        if len(self.hop_layout) != self.steps:
            raise ValueError(f"hop_layout {self.hop_layout} must give one pair per hop (steps={self.steps})")
        n_pairs = matching.pairs_for(self.kind, self.seq_len)
        if len(set(self.hop_layout)) != len(self.hop_layout) or not all(
            0 <= p < n_pairs for p in self.hop_layout
        ):
            raise ValueError(f"hop_layout {self.hop_layout} must be distinct pair indices in [0, {n_pairs})")

    def check_model(self, model: torch.nn.Module, name: str = "model") -> None:
        """A clear error if ``model`` cannot read this task's inputs."""
        need_vocab = matching.vocab_size(self.kind, self.seq_len)
        if model.cfg.n_ctx < self.seq_len or model.cfg.d_vocab < need_vocab:
            raise ValueError(
                f"{name} (n_ctx={model.cfg.n_ctx}, d_vocab={model.cfg.d_vocab}) cannot read {self.kind} "
                f"examples of seq_len={self.seq_len} (needs n_ctx >= {self.seq_len}, d_vocab >= {need_vocab})"
            )


def layout_examples(cfg: MechanismConfig) -> matching.MatchingDataset:
    """``cfg.n_patching`` examples whose hops sit in the pairs ``cfg.hop_layout``."""
    n_pairs = matching.pairs_for(cfg.kind, cfg.seq_len)
    parts, total, rounds = [], 0, 0
    while total < cfg.n_patching:
        batch = matching.generate(
            cfg.n_patching * n_pairs * (n_pairs - 1), cfg.split, cfg.steps, cfg.seq_len, cfg.kind,
            seed=(cfg.seed, 7, rounds),
        )  # fmt: skip
        parts.append(with_hop_layout(batch, cfg.hop_layout))
        total += len(parts[-1])
        rounds += 1
    fields = {}
    for f in dataclasses.fields(parts[0]):
        value = getattr(parts[0], f.name)
        fields[f.name] = (
            torch.cat([getattr(p, f.name) for p in parts]) if isinstance(value, Tensor) else value
        )
    return matching.MatchingDataset(**fields)[: cfg.n_patching]


def layout_labels(cfg: MechanismConfig) -> dict[int, str]:
    """Names of the positions in :func:`layout_examples`: the hop pairs and the query."""
    labels = {}
    for j, p in enumerate(cfg.hop_layout, start=1):
        labels[2 * p], labels[2 * p + 1] = f"hop{j} parent", f"hop{j} child"
    labels[2 * matching.pairs_for(cfg.kind, cfg.seq_len)] = "query"
    return labels


def analyse_matching_model(
    model: torch.nn.Module, cfg: MechanismConfig | None = None, progress: bool = False
) -> dict[str, pd.DataFrame]:
    """All tables for one model: ``accuracy``, ``probes``, ``attention``, ``matching_matrix``
    (the query each layer reads, on ``cfg.split``), ``matching_matrix_variants`` (every query
    definition, ID and OOD: :func:`~reasonlens.analysis.matching_matrix_variants`),
    ``matching_scores`` (per variant), ``ood`` (OOD accuracy raw / rescaled / random directions),
    ``ood_answers`` (what OOD answers are, per variant), ``embedding_norms``, ``patching`` (both
    counterfactuals, denoising), ``path_patching`` (every sublayer output into every later q, k, v,
    MLP input and the logits, on the first ``cfg.n_path`` patching examples), ``attribution``
    (attribution patching and the exact sweep of the same five sites per block, denoising) and
    ``information_flow`` (the first patching example). The model runs in evaluation mode and gets
    its own mode back."""
    cfg = cfg or MechanismConfig()
    cfg.validate()
    cfg.check_model(model)
    with eval_mode(model):
        return _analyse(model, cfg, progress)


def _analyse(model: torch.nn.Module, cfg: MechanismConfig, progress: bool) -> dict[str, pd.DataFrame]:
    tables: dict[str, pd.DataFrame] = {}
    acc = []
    for split in ("train", "test", "ood"):
        ds = matching.generate(cfg.n_eval, split, cfg.steps, cfg.seq_len, cfg.kind, seed=(cfg.seed, 5))
        acc.append({"split": split, "accuracy": evaluate_lm(model, ds.batch())["accuracy"], "n": cfg.n_eval})
    tables["accuracy"] = pd.DataFrame(acc)
    data = matching.generate(cfg.n_examples, cfg.split, cfg.steps, cfg.seq_len, cfg.kind, seed=(cfg.seed, 6))
    tables["probes"] = probe_sweep(model, data, seed=cfg.seed, progress=progress)
    tables["logit_lens"] = matching_logit_lens(model, data)  # answer and hop nodes after every layer
    tables["attention"] = attention_matching_scores(model, data)
    n_tokens = data.n_tokens
    ood = matching.generate(cfg.n_examples, "ood", cfg.steps, cfg.seq_len, cfg.kind, seed=(cfg.seed, 8))
    variants = matching_matrix_variants(model, data, ood, n_tokens=n_tokens)
    tables["matching_matrix"] = variants[variants.variant == "stream"].drop(columns="variant")
    tables["matching_matrix_variants"] = variants
    tables["matching_scores"] = matching_scores(variants)
    ood_eval = matching.generate(cfg.n_eval, "ood", cfg.steps, cfg.seq_len, cfg.kind, seed=(cfg.seed, 5))
    tables["ood"] = ood_accuracy(model, ood_eval, seed=cfg.seed)
    tables["ood_answers"] = ood_answers(model, ood_eval, variants=VARIANTS, seed=cfg.seed)
    tables["embedding_norms"] = pd.DataFrame([embedding_norms(model, n_tokens)])
    layout = layout_examples(cfg)
    frames, paths, attribution = [], [], []
    m = min(cfg.n_path, len(layout))
    for kind in ("child", "query") if cfg.kind == "single_chain" else ("child",):
        corrupt, answers = matching_counterfactual(layout, kind, seed=cfg.seed)
        df = activation_patching(model, layout.inputs, corrupt, layout.answers, answers)
        frames.append(df.assign(counterfactual=kind))
        pp = path_patching(
            model, layout.inputs[:m], corrupt[:m], layout.answers[:m], answers[:m], progress=progress
        )
        paths.append(pp.assign(counterfactual=kind))
        table, _ = compare_with_exact(model, layout.inputs, corrupt, layout.answers, answers)
        attribution.append(table.assign(counterfactual=kind))
    tables["patching"] = pd.concat(frames, ignore_index=True)
    # every single attention edge into the answer position, ranked by the drop in the answer's logit
    tables["knockout"] = rank_edges(model, layout.inputs[:m], layout.answers[:m])
    tables["path_patching"] = pd.concat(paths, ignore_index=True)
    tables["attribution"] = pd.concat(attribution, ignore_index=True)
    tables["information_flow"] = information_flow(model, layout.inputs[0]).assign(
        tokens=" ".join(map(str, layout.inputs[0].tolist()))
    )
    return tables


def summarize(tables: dict[str, pd.DataFrame], readout: int, threshold: float = 0.9) -> dict:
    """The headline numbers of :func:`analyse_matching_model`'s tables, JSON-ready.

    ``hop_first_site``: for each hop ``j``, the first residual site (in depth order) where the
    probe for the node ``j`` hops from the query reaches ``threshold`` accuracy at ``readout``.
    """
    probes = tables["probes"]
    at = probes[probes.position == readout]
    hooks = ordered_hooks(at.hook)
    first, by_site = {}, {}
    for target in sorted(set(at.target)):
        if hop_of(target) is None:
            continue
        s = at[at.target == target].set_index("hook").score
        by_site[target] = {hook_label(h): round(float(s[h]), 4) for h in hooks}
        reached = [h for h in hooks if s[h] >= threshold]
        first[target] = hook_label(reached[0]) if reached else None
    att = tables["attention"]
    attention = {
        f"L{r.layer}H{r.head} {r.kind}" + (f" hop{int(r.hop)}" if pd.notna(r.hop) else ""): round(r.score, 4)
        for r in att.itertuples()
    }
    scores = tables["matching_scores"]
    patch = tables["patching"]
    child = patch[patch.counterfactual == "child"]
    extra = {}
    if "attribution" in tables:
        extra["attribution_agreement"] = {
            kind: {k: round(v, 4) if isinstance(v, float) else v
                   for k, v in agreement(g.effect_attribution, g.effect_exact).items()}
            for kind, g in tables["attribution"].groupby("counterfactual")
        }  # fmt: skip
    if "path_patching" in tables:
        pp = tables["path_patching"]
        single = pp[(pp.counterfactual == "child") & (pp.receiver != ALL_DOWNSTREAM)]
        extra["path_patching_child_top"] = [
            {"path": f"{r.sender} -> {r.receiver}", "position": int(r.position), "effect": round(r.effect, 4)}
            for r in single.nsmallest(5, "effect").itertuples()
        ]  # the paths whose corruption lowers the clean answer's logit difference most
    return {
        "accuracy": {r.split: round(r.accuracy, 4) for r in tables["accuracy"].itertuples()},
        "hop_first_site": first,
        "hop_probe_by_site": by_site,
        "attention": attention,
        "ood": {r.variant: round(r.accuracy, 4) for r in tables["ood"].itertuples()},
        "ood_answers_raw": {
            r.category: round(r.fraction, 4) for r in tables["ood_answers"].itertuples() if r.variant == "raw"
        },
        "embedding_norms": {k: round(float(v), 4) for k, v in tables["embedding_norms"].iloc[0].items()},
        "matching_matrix": {
            f"{r.variant} L{r.layer}H{r.head}": {
                "diag_argmax_frac": round(r.diag_argmax_frac, 4),
                "diag_zscore": round(r.diag_zscore, 3),
            }
            for r in scores.itertuples()
        },  # fmt: skip
        "patching_child_max_by_site": {
            hook_label(h): {
                "position": int(g.loc[g.score.idxmax(), "position"]),
                "score": round(float(g.score.max()), 4),
            }
            for h, g in child.groupby("hook")
        },
        **extra,
    }
