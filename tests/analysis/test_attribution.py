"""Attribution patching against exact activation patching: equal where the model is linear,
close in sign and rank on small nonlinear models."""

import pytest
import torch

from reasonlens.analysis import activation_patching
from reasonlens.analysis.attribution import agreement, attribution_patching, compare_with_exact
from reasonlens.models import Transformer
from tests.analysis.test_path_patching import runs
from tests.conftest import tiny_config


def linear_model():
    """No norm, no MLP and W_Q = W_K = 0 (so every attention row is uniform over the causal
    prefix whatever the input): the logits are linear in every activation."""
    model = Transformer(tiny_config(n_layers=3, norm="none", d_mlp=0, attn_bias=True, seed=5))
    with torch.no_grad():
        for block in model.blocks:
            block.attn.W_Q.zero_()
            block.attn.W_K.zero_()
            block.attn.b_Q.zero_()
            block.attn.b_K.zero_()
    return model


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_linear_model_gives_exact_patching(direction):
    clean, corrupt, good, bad = runs()
    table, agree = compare_with_exact(linear_model(), clean, corrupt, good, bad, direction=direction)
    assert set(table.site) == {"resid_pre", "attn_out", "resid_mid", "resid_post"}  # no MLP
    assert len(table) == 3 * 4 * 9
    assert (table.effect_attribution - table.effect_exact).abs().max() < 1e-5
    assert (table.score_attribution - table.score_exact).abs().max() < 1e-5
    assert table.effect_exact.abs().max() > 0.01  # the corruption matters: equality is not 0 == 0
    assert agree["sign_agreement"] == 1.0 and agree["pearson"] > 0.999999


@pytest.mark.parametrize(
    "norm, seed, sign_min, spearman_min",
    # measured on these models: pre 1.00 / 0.974 and 0.974 / 0.959; post 0.893 / 0.815 and 0.934 / 0.886
    [("pre", 5, 0.9, 0.9), ("pre", 6, 0.9, 0.9), ("post", 5, 0.8, 0.7), ("post", 6, 0.8, 0.7)],
)
def test_nonlinear_tiny_models_agree_in_sign_and_rank(norm, seed, sign_min, spearman_min):
    clean, corrupt, good, bad = runs()
    model = Transformer(tiny_config(n_layers=3, norm=norm, seed=seed))
    table, agree = compare_with_exact(model, clean, corrupt, good, bad)
    assert set(table.site) == {"resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"}
    assert agree["n_moved"] > 50
    assert agree["sign_agreement"] >= sign_min and agree["spearman"] >= spearman_min, agree
    assert agree["max_abs_error"] > 1e-4  # nonlinear: the approximation is not exact here
    # positions before the first corrupted token: nothing differs, both are exactly zero
    early = table[table.position < 2]
    assert (early.effect_attribution == 0).all() and (early.effect_exact.abs() < 1e-6).all()


def test_scores_share_activation_patchings_scale():
    """A full patch of the last residual stream at the readout: exact score 1 (denoise); the
    approximation's score comes out on the same scale, and the columns match the exact table."""
    clean, corrupt, good, bad = runs()
    model = Transformer(tiny_config(n_layers=2, norm="pre", seed=1))
    df = attribution_patching(model, clean, corrupt, good, bad, sites=["resid_post"])
    exact = activation_patching(model, clean, corrupt, good, bad, sites=["resid_post"])
    assert (
        list(df.hook.unique())
        == list(exact.hook.unique())
        == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    )
    last = exact.set_index(["hook", "position"]).score["blocks.1.hook_resid_post", 8]
    assert last == pytest.approx(1.0, abs=1e-5)
    approx = df.set_index(["hook", "position"]).score["blocks.1.hook_resid_post", 8]
    assert 0.0 < approx < 3.0


def test_agreement_and_bad_input():
    a = agreement([1.0, -2.0, 3.0, 0.0], [2.0, -1.0, 4.0, 1e-9])
    assert a["sign_agreement"] == 1.0 and a["spearman"] == pytest.approx(1.0) and a["n_moved"] == 3
    assert agreement([1.0, 2.0, 3.0], [-1.0, -2.0, -3.0])["sign_agreement"] == 0.0
    with pytest.raises(ValueError, match="two matched series"):
        agreement([1.0], [1.0, 2.0])
    model = Transformer(tiny_config(n_layers=2, seed=1))
    model.train()
    clean, corrupt, good, bad = runs()
    with pytest.raises(ValueError, match="sites must be names from"):
        attribution_patching(model, clean, corrupt, good, bad, sites=["resid_middle"])
    with pytest.raises(ValueError, match="sites must be names from"):
        activation_patching(model, clean, corrupt, good, bad, sites=["z"])
    with pytest.raises(ValueError, match="direction must be one of"):
        attribution_patching(model, clean, corrupt, good, bad, direction="both")
    with pytest.raises(ValueError, match="same logit difference"):
        attribution_patching(model, clean, clean, good, bad)
    with pytest.raises(ValueError, match="corrupt_answers must be tokens in 0..49"):
        attribution_patching(model, clean, corrupt, good, bad - 60)
    assert all(m.training for m in model.modules())  # the evaluation-mode block gave the mode back
    df = attribution_patching(model, clean, corrupt, good, bad)
    assert len(df) == 2 * 5 * 9 and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())  # no parameter gradients accumulated
