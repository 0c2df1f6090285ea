"""The random matrices of the attention-noise reparametrisation (see :class:`ModelConfig`).

Our reading of Wang et al.'s "orthogonal noise" / "buffer" algorithm (arXiv 2405.15302): the exact
formula is not public. Each head of each layer gets two fixed ``d_model x d_model`` matrices,
``Z_QK`` and ``Z_OV``, added (times a strength ``alpha``) to its ``W_Q W_K^T`` and ``W_V W_O``.
Independent Gaussian matrices of this size are nearly orthogonal to each other, so each layer and
head writes its noise share into its own random "direction" of matrix space.

Every matrix is drawn from its own generator, seeded by ``(seed, layer, head, matrix)``, so a
matrix does not change when layers or heads are added, and drawing never touches torch's global
RNG.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

MATRICES = ("QK", "OV")
_TAG = 0x5A4E4F49  # separates these streams from anything else seeded with the same integer


def noise_generator(seed: int, layer: int, head: int, matrix: str) -> torch.Generator:
    """The generator that draws ``Z_matrix(layer, head)`` for this seed."""
    if matrix not in MATRICES:
        raise ValueError(f"matrix must be one of {MATRICES}; got {matrix!r}")
    state = np.random.SeedSequence([_TAG, seed % 2**63, layer, head, MATRICES.index(matrix)])
    return torch.Generator().manual_seed(int(state.generate_state(1, dtype=np.uint64)[0] >> 1))


def draw_noise_matrix(seed: int, layer: int, head: int, matrix: str, d_model: int) -> Float[Tensor, "d d"]:
    """One Gaussian ``d_model x d_model`` matrix scaled to unit spectral norm (float32)."""
    gen = noise_generator(seed, layer, head, matrix)
    g = torch.randn(d_model, d_model, generator=gen, dtype=torch.float64)
    return (g / torch.linalg.matrix_norm(g, ord=2)).float()


def draw_layer_noise(
    seed: int, layer: int, n_heads: int, d_model: int, matrix: str
) -> Float[Tensor, "n_heads d_model d_model"]:
    """``Z_matrix(layer, h)`` for every head ``h``, stacked."""
    return torch.stack([draw_noise_matrix(seed, layer, h, matrix, d_model) for h in range(n_heads)])
