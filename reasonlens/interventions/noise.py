"""Attention noise (our reading of Wang et al.'s "orthogonal noise" / random-matrix algorithm).

The model side lives in :mod:`reasonlens.models` (``ModelConfig.noise*`` fields; the forward pass
computes with ``W_Q W_K^T + a Z_QK`` and ``W_V W_O + a Z_OV``). This module holds what an
experiment needs around it: building the variants, counting what they add, and reading the
noise back out of a (trained) model as tidy tables.

Wang et al. (arXiv 2405.15302) describe the method only in words: v1 adds "orthogonal noise", v2
adds random matrices to the attention weight products so each layer writes into its own nearly
orthogonal "buffer" subspace (an identity-matrix variant fails), v3 reports 132 added trainable
parameters for a 12-layer GPT-2. The formulas below are our reading, not theirs. In particular,
our ``learned`` variant adds ``2 * n_layers * n_heads`` scalars, which is 288 for GPT-2 small
(12 layers x 12 heads), not 132; 132 = 12 x 11 = 2 x 66 fits neither one scalar per head (144)
nor one per head and matrix (288), so their parametrisation must differ from ours in a way we
could not determine.
"""

from __future__ import annotations

import pandas as pd
import torch

from reasonlens.models import ModelConfig, Transformer
from reasonlens.models.config import NOISES

STRENGTH_COLUMNS = ["layer", "head", "matrix", "alpha"]
SHARE_COLUMNS = ["layer", "head", "matrix", "weights_norm", "noise_norm", "noise_share"]


def with_noise(
    cfg: ModelConfig, noise: str, alpha: float = 0.0, noise_seed: int | None = None
) -> ModelConfig:
    """A validated copy of ``cfg`` with the given attention noise (``"none"`` forces alpha 0)."""
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}; got {noise!r}")
    return cfg.replace(noise=noise, noise_alpha=0.0 if noise == "none" else alpha, noise_seed=noise_seed)


def added_parameters(cfg: ModelConfig) -> int:
    """Trainable parameters the noise adds to the plain model: ``2 * n_layers * n_heads`` for
    ``learned`` (one strength per layer, head and matrix), 0 otherwise (``Z`` is a buffer)."""
    return 2 * cfg.n_layers * cfg.n_heads if cfg.noise == "learned" else 0


def noise_strengths(model: Transformer) -> pd.DataFrame:
    """The current noise strength of every (layer, head, matrix): one row each (empty without
    noise). For ``learned`` these are the trained values."""
    rows = []
    if model.cfg.noise != "none":
        for layer, block in enumerate(model.blocks):
            for matrix in ("QK", "OV"):
                alpha = getattr(block.attn, f"alpha_{matrix}").detach().float().cpu().tolist()
                for h, a in enumerate(alpha):
                    rows.append({"layer": layer, "head": h, "matrix": matrix, "alpha": a})
    return pd.DataFrame(rows, columns=STRENGTH_COLUMNS)


@torch.no_grad()
def noise_share(model: Transformer) -> pd.DataFrame:
    """How much of each effective matrix is noise: Frobenius norms of the weight part
    (``W_Q W_K^T`` or ``W_V W_O``) and of the noise part ``a Z``, and
    ``noise_share = noise_norm / (weights_norm + noise_norm)``. Empty without noise."""
    rows = []
    if model.cfg.noise == "none":
        return pd.DataFrame(rows, columns=SHARE_COLUMNS)
    for layer, block in enumerate(model.blocks):
        attn = block.attn
        weights = {
            "QK": torch.einsum("hde,hfe->hdf", attn.W_Q, attn.W_K),
            "OV": torch.einsum("hde,hef->hdf", attn.W_V, attn.W_O),
        }
        for matrix, w in weights.items():
            noise = attn.noise_matrix(matrix)
            for h in range(attn.n_heads):
                wn = float(torch.linalg.matrix_norm(w[h].float()))
                nn_ = float(torch.linalg.matrix_norm(noise[h].float()))
                share = nn_ / (wn + nn_) if wn + nn_ > 0 else float("nan")
                rows.append(
                    {"layer": layer, "head": h, "matrix": matrix, "weights_norm": wn, "noise_norm": nn_,
                     "noise_share": share}
                )  # fmt: skip
    return pd.DataFrame(rows, columns=SHARE_COLUMNS)
