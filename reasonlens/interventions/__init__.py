"""Interventions on models: attention noise (our reading of Wang et al.'s random-matrix algorithm).

The forward pass lives in :mod:`reasonlens.models` (``ModelConfig.noise``); these helpers build
variants, count what they add and read the noise back out as tidy tables.
"""

from reasonlens.interventions.noise import added_parameters, noise_share, noise_strengths, with_noise
from reasonlens.models.noise import draw_noise_matrix

__all__ = ["added_parameters", "draw_noise_matrix", "noise_share", "noise_strengths", "with_noise"]
