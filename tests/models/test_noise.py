"""Attention noise: the effective matrices, both attention paths, parameters, seeds, save/load."""

import pytest
import torch
import torch.nn.functional as F

from reasonlens.interventions import added_parameters, noise_share, noise_strengths
from reasonlens.models import ModelConfig, Transformer
from reasonlens.models.noise import draw_noise_matrix
from tests.conftest import tiny_config

NOISY = [("fixed", 0.7), ("learned", 0.4), ("identity", 0.5)]


def noisy(noise, alpha, **kw):
    return Transformer(tiny_config(noise=noise, noise_alpha=alpha, attn_bias=True, **kw))


def perturb(model):
    with torch.no_grad():  # non-trivial biases and gains
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _ln(x, ln):
    return F.layer_norm(x, x.shape[-1:], ln.w, ln.b, ln.eps)


@pytest.mark.parametrize("noise, alpha", [("none", 0.0), *NOISY])
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_scores_and_outputs_use_the_effective_matrices(noise, alpha, norm, tokens):
    """hook_attn_scores = (x W_QK x^T + bias terms) / sqrt(d_head) and hook_attn_out =
    pattern @ (x W_OV + b_V W_O) + b_O, with W_QK, W_OV read from model.QK.AB and model.OV.AB."""
    model = perturb(noisy(noise, alpha, norm=norm))
    _, c = model.run_with_cache(tokens)
    QK, OV = model.QK.AB, model.OV.AB
    for layer, block in enumerate(model.blocks):
        a = block.attn
        x = c[f"blocks.{layer}.hook_resid_pre"]
        x = _ln(x, block.ln1) if norm == "pre" else x
        xq, xk = torch.einsum("bpd,hde->bhpe", x, a.W_Q), torch.einsum("bpd,hde->bhpe", x, a.W_K)
        scores = (
            torch.einsum("bqd,hde,bke->bhqk", x, QK[layer], x)
            + torch.einsum("bhqe,he->bhq", xq, a.b_K)[..., None]
            + torch.einsum("he,bhke->bhk", a.b_Q, xk)[:, :, None]
            + (a.b_Q * a.b_K).sum(-1)[None, :, None, None]
        ) / a.attn_scale
        causal = torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool).tril()
        got = c[f"blocks.{layer}.attn.hook_attn_scores"]
        torch.testing.assert_close(got[..., causal], scores[..., causal], atol=1e-5, rtol=1e-5)
        pattern = c[f"blocks.{layer}.attn.hook_pattern"]
        out = (
            torch.einsum("bhqk,bkd,hde->bqe", pattern, x, OV[layer])
            + torch.einsum("bhqk,he,hed->bqd", pattern, a.b_V, a.W_O)
            + a.b_O
        )
        torch.testing.assert_close(c[f"blocks.{layer}.hook_attn_out"], out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("noise, alpha", NOISY)
def test_effective_matrices_are_weights_plus_scaled_noise(noise, alpha):
    model = noisy(noise, alpha)
    cfg = model.cfg
    for layer, block in enumerate(model.blocks):
        for h in range(cfg.n_heads):
            a = block.attn
            z_qk = torch.eye(cfg.d_model) if noise == "identity" else a.Z_QK[h]
            z_ov = torch.eye(cfg.d_model) if noise == "identity" else a.Z_OV[h]
            torch.testing.assert_close(model.QK.AB[layer, h], a.W_Q[h] @ a.W_K[h].T + alpha * z_qk)
            torch.testing.assert_close(model.OV.AB[layer, h], a.W_V[h] @ a.W_O[h] + alpha * z_ov)
    assert model.QK.shape == model.OV.shape == (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_model)


def test_noise_matrices_are_gaussian_with_unit_spectral_norm_and_differ_per_layer_head_matrix():
    model = noisy("fixed", 1.0, n_heads=2)
    zs = [getattr(b.attn, f"Z_{m}")[h] for b in model.blocks for m in ("QK", "OV") for h in range(2)]
    for z in zs:
        assert torch.linalg.matrix_norm(z, ord=2).item() == pytest.approx(1.0, abs=1e-5)
    flat = torch.stack([z.flatten() / z.norm() for z in zs])
    cos = flat @ flat.T - torch.eye(len(zs))
    assert cos.abs().max() < 0.3  # independent draws: nearly orthogonal in matrix space
    # drawn per (seed, layer, head, matrix): the same matrix whatever the model's depth
    torch.testing.assert_close(model.blocks[1].attn.Z_OV[0], draw_noise_matrix(0, 1, 0, "OV", 32))


@pytest.mark.parametrize("noise, alpha", [("none", 0.0), *NOISY])
def test_fused_and_explicit_paths_agree_with_noise(noise, alpha, tokens):
    model = perturb(noisy(noise, alpha))
    fused = model(tokens)
    explicit = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.attn.hook_pattern", lambda t, hook: None)])
    with_pattern_hooks = model.run_with_cache(tokens)[0]
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused, with_pattern_hooks, atol=1e-5, rtol=1e-5)
    fused.pow(2).mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_pattern", lambda t, hook: None)]).pow(
        2
    ).mean().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], atol=1e-4, rtol=1e-4, msg=n)


@pytest.mark.parametrize("noise, alpha", [("none", 0.0), *NOISY])
def test_hook_names_and_shapes_do_not_change(noise, alpha, tokens):
    plain = Transformer(tiny_config(attn_bias=True))
    model = noisy(noise, alpha)
    _, c0 = plain.run_with_cache(tokens)
    _, c1 = model.run_with_cache(tokens)
    assert {k: v.shape for k, v in c0.items()} == {k: v.shape for k, v in c1.items()}
    assert set(plain.hook_dict) == set(model.hook_dict)


@pytest.mark.parametrize("noise, alpha", [("none", 0.0), *NOISY])
def test_added_trainable_parameters_are_exactly_as_claimed(noise, alpha):
    cfg = tiny_config(n_layers=3, n_heads=2, noise=noise, noise_alpha=alpha)
    plain = Transformer(tiny_config(n_layers=3, n_heads=2))
    model = Transformer(cfg)
    added = model.n_params() - plain.n_params()
    assert added == added_parameters(cfg) == (2 * 3 * 2 if noise == "learned" else 0)
    extra = {n for n, p in model.named_parameters() if p.requires_grad} - set(dict(plain.named_parameters()))
    if noise == "learned":
        assert extra == {f"blocks.{layer}.attn.alpha_{m}" for layer in range(3) for m in ("QK", "OV")}
        assert all(model.get_parameter(n).shape == (2,) for n in extra)
        strengths = noise_strengths(model)
        assert len(strengths) == 12 and strengths.alpha.to_numpy() == pytest.approx(alpha)
    else:
        assert extra == set()
    # the noise never changes the weights drawn from the init seed
    for name, p in plain.named_parameters():
        assert torch.equal(p, model.get_parameter(name)), name


def test_learned_strengths_train_and_fixed_noise_does_not(tokens):
    model = noisy("learned", 0.5)
    model(tokens).pow(2).mean().backward()
    assert all(model.get_parameter(f"blocks.{i}.attn.alpha_{m}").grad.abs().sum() > 0
               for i in range(2) for m in ("QK", "OV"))  # fmt: skip
    fixed = noisy("fixed", 0.5)
    assert not any(n.split(".")[-1].startswith(("Z_", "alpha_")) for n, _ in fixed.named_parameters())
    assert not fixed.blocks[0].attn.Z_QK.requires_grad


def test_noise_is_deterministic_per_seed_and_independent_of_global_rng(tokens):
    a = noisy("fixed", 1.0, seed=3)
    torch.manual_seed(99)
    torch.randn(5)
    b = noisy("fixed", 1.0, seed=3)
    c = noisy("fixed", 1.0, seed=3, noise_seed=4)
    d = noisy("fixed", 1.0, seed=4)
    assert torch.equal(a.blocks[1].attn.Z_QK, b.blocks[1].attn.Z_QK)
    assert torch.equal(a(tokens), b(tokens))
    assert not torch.equal(a.blocks[1].attn.Z_QK, c.blocks[1].attn.Z_QK)
    assert torch.equal(a.W_Q, c.W_Q)  # noise_seed moves only the noise
    assert not torch.equal(a.blocks[1].attn.Z_QK, d.blocks[1].attn.Z_QK)  # default: the model seed
    assert torch.equal(d.blocks[1].attn.Z_QK, noisy("fixed", 1.0, seed=0, noise_seed=4).blocks[1].attn.Z_QK)


@pytest.mark.parametrize("noise, alpha", NOISY)
def test_save_load_keeps_the_noise(tmp_path, noise, alpha, tokens):
    model = perturb(noisy(noise, alpha, seed=5))
    path = model.save(tmp_path / "m.safetensors")
    loaded = Transformer.load(path)
    assert loaded.cfg == model.cfg and loaded.cfg.noise == noise
    torch.testing.assert_close(loaded(tokens), model(tokens), atol=0, rtol=0)
    torch.testing.assert_close(loaded.QK.AB, model.QK.AB, atol=0, rtol=0)
    if noise == "learned":  # the trained strengths come back, not noise_alpha
        assert noise_strengths(loaded).equals(noise_strengths(model))
        assert noise_strengths(loaded).alpha.to_numpy() != pytest.approx(alpha)


def test_noise_none_adds_nothing_and_old_configs_load():
    plain = Transformer(tiny_config())
    assert not any("alpha" in n or "Z_" in n for n in plain.state_dict())
    assert not hasattr(plain.blocks[0].attn, "Z_QK")
    old = tiny_config().to_dict()
    for key in ("noise", "noise_alpha", "noise_seed"):
        old.pop(key)
    assert ModelConfig.from_dict(old) == tiny_config()
    assert noise_strengths(plain).empty and noise_share(plain).empty


def test_noise_none_is_the_unchanged_fused_attention(tokens):
    """With noise='none' the attention runs exactly the plain code: the same ops, bit for bit."""
    model = perturb(Transformer(tiny_config(attn_bias=True)))
    a = model.blocks[0].attn
    x = torch.randn(3, 9, 32, generator=torch.Generator().manual_seed(2))
    B, T, D = x.shape
    H, dh = a.n_heads, a.d_head
    w_qkv = torch.stack([a.W_Q, a.W_K, a.W_V]).permute(2, 0, 1, 3).reshape(D, 3 * H * dh)
    b_qkv = torch.stack([a.b_Q, a.b_K, a.b_V]).reshape(3 * H * dh)
    qkv = torch.addmm(b_qkv, x.reshape(B * T, D), w_qkv).view(B, T, 3, H, dh)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    z = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)
    want = torch.addmm(a.b_O, z.reshape(B * T, H * dh), a.W_O.reshape(H * dh, D)).view(B, T, D)
    assert torch.equal(a(x), want)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"noise": "orthogonal"}, r"ModelConfig.noise must be one of .*'orthogonal'"),
        ({"noise": "fixed", "noise_alpha": -1.0}, r"noise_alpha must be a finite number >= 0; got -1.0"),
        ({"noise": "fixed", "noise_alpha": float("inf")}, r"noise_alpha must be a finite number"),
        ({"noise": "fixed"}, r"noise='fixed' needs noise_alpha > 0"),
        ({"noise": "identity", "noise_alpha": 0}, r"noise='identity' needs noise_alpha > 0"),
        ({"noise_alpha": 0.5}, r"noise_alpha=0.5 has no effect with noise='none'"),
        ({"noise": "fixed", "noise_alpha": 1.0, "noise_seed": 1.5}, r"noise_seed must be an integer"),
    ],
)
def test_bad_noise_settings_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**change)


def test_noisy_models_do_not_convert_to_transformerlens():
    with pytest.raises(ValueError, match="no attention noise"):
        noisy("fixed", 1.0).to_hooked_transformer()
