import math
import re

import pytest
import torch
import torch.nn.functional as F
from transformer_lens import ActivationCache

from reasonlens.models import ModelConfig, Transformer, eval_mode, init_std
from reasonlens.models.tl_compat import (
    hooked_transformer_available,
    transformer_bridge_available,
    transformerlens_version,
)
from tests.conftest import tiny_config

BLOCK_HOOKS = {
    "hook_resid_pre": "d_model",
    "attn.hook_q": "head",
    "attn.hook_k": "head",
    "attn.hook_v": "head",
    "attn.hook_attn_scores": "pattern",
    "attn.hook_pattern": "pattern",
    "attn.hook_z": "head",
    "hook_attn_out": "d_model",
    "hook_resid_mid": "d_model",
    "mlp.hook_pre": "d_mlp",
    "mlp.hook_post": "d_mlp",
    "hook_mlp_out": "d_model",
    "hook_resid_post": "d_model",
}


def expected_shape(kind, cfg, batch, pos):
    return {
        "d_model": (batch, pos, cfg.d_model),
        "head": (batch, pos, cfg.n_heads, cfg.d_head),
        "pattern": (batch, cfg.n_heads, pos, pos),
        "d_mlp": (batch, pos, cfg.d_mlp),
    }[kind]


def test_hook_names_and_shapes_follow_transformerlens(model, tokens):
    cfg = model.cfg
    logits, cache = model.run_with_cache(tokens)
    assert isinstance(cache, ActivationCache)
    B, T = tokens.shape
    assert logits.shape == (B, T, cfg.d_vocab)
    assert cache["hook_embed"].shape == (B, T, cfg.d_model)
    assert cache["hook_pos_embed"].shape == (B, T, cfg.d_model)
    for layer in range(cfg.n_layers):
        for name, kind in BLOCK_HOOKS.items():
            assert cache[f"blocks.{layer}.{name}"].shape == expected_shape(kind, cfg, B, T), name
    # TransformerLens's short names resolve too.
    assert torch.equal(cache["pattern", 1], cache["blocks.1.attn.hook_pattern"])
    ln_hooks = {k for k in cache.keys() if ".ln" in k or k.startswith("ln_final")}
    if cfg.norm == "none":
        assert ln_hooks == set()
    else:
        assert "blocks.0.ln1.hook_scale" in ln_hooks and "blocks.1.ln2.hook_normalized" in ln_hooks
        assert ("ln_final.hook_normalized" in ln_hooks) == (cfg.norm == "pre")


def test_parameter_names_and_shapes(model):
    cfg = model.cfg
    H, D, dh = cfg.n_heads, cfg.d_model, cfg.d_head
    shapes = {k: tuple(v.shape) for k, v in model.named_parameters()}
    assert shapes["embed.W_E"] == (cfg.d_vocab, D)
    assert shapes["pos_embed.W_pos"] == (cfg.n_ctx, D)
    for w in ("W_Q", "W_K", "W_V"):
        assert shapes[f"blocks.0.attn.{w}"] == (H, D, dh)
    assert shapes["blocks.0.attn.W_O"] == (H, dh, D)
    assert shapes["blocks.0.attn.b_Q"] == (H, dh)
    assert shapes["blocks.1.mlp.W_in"] == (D, cfg.d_mlp)
    assert shapes["blocks.1.mlp.W_out"] == (cfg.d_mlp, D)
    assert shapes["unembed.W_U"] == (D, cfg.d_vocab)
    assert shapes["unembed.b_U"] == (cfg.d_vocab,)
    assert model.W_Q.shape == (cfg.n_layers, H, D, dh)
    assert model.W_O.shape == (cfg.n_layers, H, dh, D)
    assert model.QK.shape == (cfg.n_layers, H, D, D)
    assert model.OV.shape == (cfg.n_layers, H, D, D)
    qk = model.QK.AB[1, 0]
    assert torch.allclose(qk, model.W_Q[1, 0] @ model.W_K[1, 0].T)


def test_biases_off_means_no_bias_parameters():
    model = Transformer(tiny_config(attn_bias=False, mlp_bias=False, unembed_bias=False))
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_parameters()}
    assert names.isdisjoint({"b_Q", "b_K", "b_V", "b_O", "b_in", "b_out", "b_U"})


def test_fused_and_explicit_attention_agree(model, tokens):
    with torch.no_grad():
        for p in model.parameters():  # non-trivial biases and gains
            p.add_(0.05 * torch.randn_like(p))
    fused = model(tokens)
    seen = []
    explicit = model.run_with_hooks(
        tokens, fwd_hooks=[(lambda n: n.endswith("hook_pattern"), lambda t, hook: seen.append(hook.name))]
    )
    assert seen == [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    # Gradients agree as well.
    fused.sum().backward()
    g_fused = model.blocks[0].attn.W_Q.grad.clone()
    model.zero_grad()
    model.run_with_hooks(
        tokens, fwd_hooks=[("blocks.0.attn.hook_pattern", lambda t, hook: None)]
    ).sum().backward()
    torch.testing.assert_close(g_fused, model.blocks[0].attn.W_Q.grad, atol=1e-4, rtol=1e-4)


def test_pattern_hook_edit_changes_the_output(tokens):
    model = Transformer(tiny_config())

    def uniform(pattern, hook):
        causal = torch.ones_like(pattern).tril()
        return causal / causal.sum(-1, keepdim=True)

    base = model(tokens)
    edited = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_pattern", uniform)])
    assert not torch.allclose(base, edited)
    _, cache = model.run_with_cache(tokens)
    assert torch.allclose(cache["blocks.0.attn.hook_pattern"].sum(-1), torch.ones(3, 2, 9))
    # causal: nothing above the diagonal
    assert cache["blocks.0.attn.hook_pattern"].triu(1).abs().max() == 0


def _ln(x, w, b, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], w, b, eps)


def test_post_ln_structure(tokens):
    model = Transformer(tiny_config(norm="post", mlp_bias=True))
    _, c = model.run_with_cache(tokens)
    for layer, block in enumerate(model.blocks):
        pre, attn_out = c[f"blocks.{layer}.hook_resid_pre"], c[f"blocks.{layer}.hook_attn_out"]
        mid, mlp_out = c[f"blocks.{layer}.hook_resid_mid"], c[f"blocks.{layer}.hook_mlp_out"]
        post = c[f"blocks.{layer}.hook_resid_post"]
        torch.testing.assert_close(mid, _ln(pre + attn_out, block.ln1.w, block.ln1.b))
        torch.testing.assert_close(post, _ln(mid + mlp_out, block.ln2.w, block.ln2.b))
        # the MLP reads the normalised stream
        torch.testing.assert_close(c[f"blocks.{layer}.mlp.hook_pre"], mid @ block.mlp.W_in + block.mlp.b_in)
        if layer + 1 < model.cfg.n_layers:
            torch.testing.assert_close(c[f"blocks.{layer + 1}.hook_resid_pre"], post)
    # no final LayerNorm: the unembedding reads the last block's output
    assert not hasattr(model, "ln_final")
    last = c[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
    torch.testing.assert_close(model(tokens), last @ model.W_U + model.b_U)


def test_pre_ln_structure(tokens):
    model = Transformer(tiny_config(norm="pre"))
    _, c = model.run_with_cache(tokens)
    for layer, block in enumerate(model.blocks):
        pre = c[f"blocks.{layer}.hook_resid_pre"]
        torch.testing.assert_close(c[f"blocks.{layer}.ln1.hook_normalized"], _ln(pre, None, None))
        # attention reads LN(resid_pre)
        q = torch.einsum("bpd,hde->bphe", _ln(pre, block.ln1.w, block.ln1.b), block.attn.W_Q)
        torch.testing.assert_close(c[f"blocks.{layer}.attn.hook_q"], q, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            c[f"blocks.{layer}.hook_resid_mid"], pre + c[f"blocks.{layer}.hook_attn_out"]
        )
        torch.testing.assert_close(
            c[f"blocks.{layer}.hook_resid_post"],
            c[f"blocks.{layer}.hook_resid_mid"] + c[f"blocks.{layer}.hook_mlp_out"],
        )
    last = c[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
    torch.testing.assert_close(
        model(tokens), _ln(last, model.ln_final.w, model.ln_final.b) @ model.W_U + model.b_U
    )


def test_attention_only_blocks(tokens):
    model = Transformer(tiny_config(d_mlp=0))
    _, c = model.run_with_cache(tokens)
    assert not any("mlp" in k for k in c.keys())
    torch.testing.assert_close(c["blocks.0.hook_resid_post"], c["blocks.0.hook_resid_mid"])


@pytest.mark.parametrize("init", ["normal", "uniform"])
@pytest.mark.parametrize("gamma", [0.3, 0.5, 1.0])
def test_init_statistics_follow_gamma(init, gamma):
    cfg = ModelConfig(
        n_layers=1, d_model=256, d_mlp=1024, n_heads=4, d_vocab=301, n_ctx=64, init=init, gamma=gamma
    )
    model = Transformer(cfg)
    fan = {
        "embed.W_E": 301,
        "pos_embed.W_pos": 64,
        "blocks.0.attn.W_Q": 256,
        "blocks.0.attn.W_O": 256,
        "blocks.0.mlp.W_in": 256,
        "blocks.0.mlp.W_out": 1024,
        "unembed.W_U": 256,
    }
    params = dict(model.named_parameters())
    for name, d_in in fan.items():
        w = params[name].detach()
        want = d_in**-gamma if init == "normal" else (6 / d_in) ** gamma / math.sqrt(3)
        assert init_std(cfg, d_in) == pytest.approx(want)
        assert w.std().item() == pytest.approx(want, rel=0.05), name
        assert abs(w.mean().item()) < 4 * want / math.sqrt(w.numel())
        if init == "uniform":
            assert w.abs().max().item() <= (6 / d_in) ** gamma
    assert torch.all(params["blocks.0.ln1.w"] == 1) and torch.all(params["unembed.b_U"] == 0)


def test_init_is_seeded_and_independent_of_global_rng():
    a = Transformer(tiny_config(seed=3))
    torch.manual_seed(123)
    torch.randn(10)
    b = Transformer(tiny_config(seed=3))
    c = Transformer(tiny_config(seed=4))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.W_E, c.W_E)


def test_save_load_round_trip(tmp_path, model, tokens):
    path = model.save(tmp_path / "m.safetensors", metadata={"note": "hello", "step": 3})
    loaded = Transformer.load(path)
    assert loaded.cfg == model.cfg
    torch.testing.assert_close(loaded(tokens), model(tokens), atol=0, rtol=0)
    assert Transformer.read_metadata(path) == {"note": "hello", "step": 3}
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def test_saved_checkpoints_get_the_usual_file_mode(tmp_path, model):
    """Readable by whoever may read the folder (0666 less the umask), like the CSVs beside them,
    not the 0600 that the safetensors writer creates."""
    import os

    mask = os.umask(0o022)
    try:
        path = model.save(tmp_path / "m.safetensors")
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_load_rejects_other_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a reasonlens model file"):
        Transformer.load(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        Transformer.load(tmp_path / "missing.safetensors")


def test_forward_input_errors():
    model = Transformer(tiny_config())
    with pytest.raises(ValueError, match="exceeds n_ctx=9"):
        model(torch.zeros(1, 10, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[batch, pos\]"):
        model(torch.zeros(10, dtype=torch.long))


def test_stop_at_layer_returns_resid_pre(tokens):
    model = Transformer(tiny_config(norm="post"))
    _, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(model(tokens, stop_at_layer=1), cache["blocks.1.hook_resid_pre"])


def test_transformerlens_patching_utilities_run_on_our_model(tokens):
    """TransformerLens's own patching loop on our model, as user code calls it: inside
    ``eval_mode`` (which TransformerLens 4 requires and 3.x does not mind), and the model comes
    back in training mode."""
    from transformer_lens import patching

    model = Transformer(tiny_config(norm="post"))
    assert model.training
    corrupt = tokens.clone()
    corrupt[:, 0] = (corrupt[:, 0] + 1) % 50
    with eval_mode(model):
        _, clean_cache = model.run_with_cache(tokens)
        out = patching.get_act_patch_resid_pre(
            model, corrupt, clean_cache, lambda logits: logits[:, -1, 0].mean()
        )
    assert out.shape == (model.cfg.n_layers, tokens.shape[1])
    assert all(m.training for m in model.modules())
    # the prompts differ only in token 0, so patching position 0 before layer 0 restores the clean run
    with torch.no_grad():
        clean_out = model(tokens)[:, -1, 0].mean()
    torch.testing.assert_close(out[0, 0], clean_out)
    # patching the clean residual at every position of layer 0 restores the clean output exactly
    clean_value = model(tokens)[:, -1, 0].mean()
    full = model.run_with_hooks(
        corrupt,
        fwd_hooks=[("blocks.0.hook_resid_pre", lambda t, hook: clean_cache["blocks.0.hook_resid_pre"])],
    )[:, -1, 0].mean()
    torch.testing.assert_close(full, clean_value)


TL_VERSION = transformerlens_version()
on_tl3 = pytest.mark.skipif(
    not hooked_transformer_available(),
    reason=f"HookedTransformer export needs TransformerLens 3.x; transformer-lens {TL_VERSION} is installed "
    "(the constraints.txt CI line runs this)",
)
on_tl4 = pytest.mark.skipif(
    not transformer_bridge_available(),
    reason=f"TransformerBridge export needs TransformerLens 4.x; transformer-lens {TL_VERSION} is installed "
    "(the constraints-tl4.txt CI line runs this)",
)


def perturbed_model(norm, act_fn):
    cfg = tiny_config(norm=norm, act_fn=act_fn, attn_bias=True, mlp_bias=True, gamma=0.3)
    model = Transformer(cfg)
    torch.manual_seed(0)  # the perturbation and the tokens below: the same check on every run
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def assert_same_as(exported, model, norm, scaled=False):
    """Logits and a few activations agree. Without normalisation the logits grow large (hundreds), and
    float32 rounding grows with them, so that case's tolerance is relative to the largest logit (a
    wrong export differs by O(1) of it); ``scaled`` drops the elementwise relative part too."""
    tokens = torch.randint(0, 50, (4, 9))
    rtol = 0 if norm == "pre" else 1e-4
    logits = model(tokens)
    atol = 1e-4 * max(1.0, logits.detach().abs().max().item()) if norm == "none" else 1e-4
    torch.testing.assert_close(exported(tokens), logits, atol=atol, rtol=0 if scaled else rtol)
    _, ours = model.run_with_cache(tokens)
    _, theirs = exported.run_with_cache(tokens)
    for name in ("blocks.1.attn.hook_pattern", "blocks.1.hook_resid_mid", "blocks.0.hook_mlp_out"):
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-4, rtol=rtol)


@on_tl3
@pytest.mark.parametrize("norm", ["pre", "none"])
@pytest.mark.parametrize("act_fn", ["relu", "gelu_new"])
def test_equivalent_to_transformerlens_hooked_transformer(norm, act_fn):
    model = perturbed_model(norm, act_fn)
    tl = model.to_hooked_transformer()
    assert_same_as(tl, model, norm)
    assert type(model.to_transformerlens()) is type(tl)


@on_tl4
@pytest.mark.parametrize("norm", ["pre", "none"])
@pytest.mark.parametrize("act_fn", ["relu", "gelu", "gelu_new"])
def test_equivalent_to_transformerlens_bridge(norm, act_fn):
    from transformer_lens.model_bridge import TransformerBridge

    model = perturbed_model(norm, act_fn)
    bridge = model.to_transformerlens()
    assert isinstance(bridge, TransformerBridge)
    # The native model multiplies flattened nn.Linear weights (another summation order than our
    # per-head einsums): on no-norm logits of a few hundred that rounding reaches ~3e-5 of the
    # largest logit (1e-2 absolute), so the no-norm logits are compared relative to their scale.
    assert_same_as(bridge, model, norm, scaled=True)


@on_tl4
@pytest.mark.parametrize("change", [{"d_vocab_out": 7, "unembed_bias": False}, {"d_mlp": 0}])
def test_bridge_export_of_other_shapes(change):
    """No biases and a separate output vocabulary; attention-only blocks."""
    model = Transformer(tiny_config(**change))
    tokens = torch.randint(0, 50, (2, 9))
    torch.testing.assert_close(model.to_transformer_bridge()(tokens), model(tokens), atol=1e-4, rtol=0)


@on_tl4
def test_hooked_transformer_export_on_tl4_names_the_version_and_the_new_function():
    with pytest.raises(ImportError, match=rf"transformer-lens {re.escape(TL_VERSION)}.*to_transformerlens"):
        Transformer(tiny_config()).to_hooked_transformer()


@on_tl3
def test_bridge_export_on_tl3_names_the_version():
    with pytest.raises(ImportError, match=rf"transformer-lens {re.escape(TL_VERSION)}.*to_transformerlens"):
        Transformer(tiny_config()).to_transformer_bridge()


@pytest.mark.parametrize("export", ["to_transformerlens", "to_hooked_transformer", "to_transformer_bridge"])
def test_post_ln_does_not_convert(export):
    with pytest.raises(
        ValueError, match=rf"no post-LN.*transformer-lens {re.escape(TL_VERSION)}.*norm='post'"
    ):
        getattr(Transformer(tiny_config(norm="post")), export)()


def test_eval_mode_restores_every_module_mode_also_after_an_error():
    model = Transformer(tiny_config())
    model.blocks[0].attn.eval()
    before = [m.training for m in model.modules()]
    with eval_mode(model) as inside:
        assert inside is model and not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before
    model.eval()
    with pytest.raises(RuntimeError, match="boom"), eval_mode(model):
        raise RuntimeError("boom")
    assert not any(m.training for m in model.modules())
    with pytest.raises(TypeError, match="needs a torch.nn.Module; got str"), eval_mode("model"):
        pass


def test_embed_init_scale_scales_the_token_embedding_only():
    base = Transformer(tiny_config(d_vocab=201, n_ctx=13, seed=4))
    big = Transformer(tiny_config(d_vocab=201, n_ctx=13, seed=4, embed_init_scale=2.0))
    torch.testing.assert_close(big.W_E, 2.0 * base.W_E)
    torch.testing.assert_close(big.W_pos, base.W_pos)
    torch.testing.assert_close(big.W_Q, base.W_Q)
    for bad in (0.0, -1.0, float("inf"), True):
        with pytest.raises(ValueError, match="embed_init_scale"):
            tiny_config(embed_init_scale=bad)
