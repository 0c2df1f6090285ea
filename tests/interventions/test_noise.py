"""Noise helpers: variants, the added-parameter count, strengths and noise shares."""

import pytest
import torch

from reasonlens.interventions import added_parameters, noise_share, noise_strengths, with_noise
from reasonlens.models import ModelConfig, Transformer
from tests.conftest import tiny_config


def noisy(noise, alpha, **kw):
    return Transformer(tiny_config(noise=noise, noise_alpha=alpha, **kw))


def test_noise_share_reports_the_norms():
    model = noisy("identity", 2.0)
    share = noise_share(model)
    assert len(share) == 2 * 2 * 2
    assert share.noise_norm.to_numpy() == pytest.approx(2.0 * 32**0.5)  # ||2 I||_F with d_model 32
    assert share.noise_share.between(0, 1).all()


def test_with_noise_builds_variants():
    base = tiny_config()
    assert with_noise(base, "learned", 0.0).noise_alpha == 0.0  # learned may start at 0
    assert with_noise(with_noise(base, "fixed", 1.0), "none", 1.0) == base
    with pytest.raises(ValueError, match="noise must be one of"):
        with_noise(base, "buffer", 1.0)


def test_added_parameters_for_gpt2_small_size():
    """Our learned variant adds one scalar per layer, head and matrix: 288 for 12 x 12 heads
    (Wang et al. v3 report 132 for a 12-layer GPT-2; our reading does not give that number)."""
    cfg = ModelConfig(n_layers=12, n_heads=12, d_model=48, d_vocab=10, n_ctx=4, noise="learned")
    assert added_parameters(cfg) == 288
    assert added_parameters(cfg.replace(noise="fixed", noise_alpha=1.0)) == 0


def test_strengths_follow_training_of_learned_noise():
    model = noisy("learned", 0.5)
    with torch.no_grad():
        model.blocks[1].attn.alpha_OV[1] = 2.0
    s = noise_strengths(model)
    assert list(s.columns) == ["layer", "head", "matrix", "alpha"]
    assert s.set_index(["layer", "head", "matrix"]).alpha[(1, 1, "OV")] == 2.0
    assert (s.alpha == 0.5).sum() == len(s) - 1
