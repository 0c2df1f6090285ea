"""A small decoder-only transformer with TransformerLens hook points and parameter conventions.

Pre-LN, post-LN or no normalisation, any depth, and a scale-controlled initialisation, all chosen
by :class:`~reasonlens.models.config.ModelConfig`. Hook names, parameter names and parameter shapes
are those of TransformerLens's ``HookedTransformer``, so ``run_with_cache``, ``run_with_hooks``,
``ActivationCache`` and ``transformer_lens.patching`` work on it unchanged.

Attention has two numerically equivalent paths. When nothing is hooked on the attention scores or
pattern, it calls ``scaled_dot_product_attention`` on a fused QKV projection (fast); as soon as a
hook is attached to ``hook_attn_scores`` or ``hook_pattern`` (``run_with_cache`` attaches one to
every hook point), it computes the pattern explicitly so the hooks can read and edit it.

With attention noise (``ModelConfig.noise`` other than "none"; our reading of Wang et al.'s
random-matrix reparametrisation, see :class:`~reasonlens.models.config.ModelConfig`), both paths
compute with the effective matrices ``W_Q W_K^T + a Z_QK`` and ``W_V W_O + a Z_OV`` by widening
each head: queries ``[x W_Q + b_Q, a x Z_QK]``, keys ``[x W_K + b_K, x]`` and values
``[x W_V + b_V, a x Z_OV]``, scores scaled by ``1 / sqrt(d_head)`` (not by the widened size), and
the head's output ``z W_O + pattern @ (a x Z_OV)``. Hook names and shapes do not change:
``hook_q``/``hook_k``/``hook_v``/``hook_z`` hold the ``d_head``-wide parts (the ``W`` path), while
``hook_attn_scores``, ``hook_pattern`` and ``hook_attn_out`` hold what the model computes, noise
included. ``model.QK`` and ``model.OV`` report the effective matrices.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens import ActivationCache, HookedRootModule
from transformer_lens.FactoredMatrix import FactoredMatrix
from transformer_lens.hook_points import HookPoint

from reasonlens.checkpoints import CheckpointError, atomic_save_safetensors, read_header, read_safetensors
from reasonlens.models.config import ModelConfig
from reasonlens.models.noise import draw_layer_noise

FORMAT_NAME = "reasonlens.transformer"
FORMAT_VERSION = 1


def _hooked(*points: HookPoint) -> bool:
    """True when any of these hook points has a forward or backward hook attached."""
    return any(p.fwd_hooks or p.bwd_hooks for p in points)


def fan_in(cfg: ModelConfig, param_name: str) -> int | None:
    """The ``d_in`` used to scale a parameter's initialisation, or None for gains and biases."""
    leaf = param_name.rsplit(".", 1)[-1]
    table = {
        "W_E": cfg.d_vocab,
        "W_pos": cfg.n_ctx,
        "W_Q": cfg.d_model,
        "W_K": cfg.d_model,
        "W_V": cfg.d_model,
        "W_O": cfg.n_heads * cfg.d_head,
        "W_in": cfg.d_model,
        "W_out": cfg.d_mlp,
        "W_U": cfg.d_model,
    }
    return table.get(leaf)


def init_scale(cfg: ModelConfig, d_in: int) -> float:
    """Standard deviation (normal) or half-width (uniform) for a weight with fan-in ``d_in``."""
    if cfg.init == "normal":
        return d_in**-cfg.gamma
    return (6.0 / d_in) ** cfg.gamma


def init_std(cfg: ModelConfig, d_in: int) -> float:
    """Standard deviation of the initial distribution for a weight with fan-in ``d_in``."""
    scale = init_scale(cfg, d_in)
    return scale if cfg.init == "normal" else scale / math.sqrt(3.0)


class Embed(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        return F.embedding(tokens, self.W_E)


class PosEmbed(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        n_pos = tokens.shape[-1]
        return self.W_pos[:n_pos].unsqueeze(0).expand(tokens.shape[0], -1, -1)


class LayerNorm(nn.Module):
    """LayerNorm with TransformerLens's ``w``/``b`` names and ``hook_scale``/``hook_normalized``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.eps = cfg.ln_eps
        self.w = nn.Parameter(torch.ones(cfg.d_model))
        self.b = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_scale = HookPoint()  # [batch, pos, 1]
        self.hook_normalized = HookPoint()  # [batch, pos, d_model]

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        if not _hooked(self.hook_scale, self.hook_normalized):
            return F.layer_norm(x, x.shape[-1:], self.w, self.b, self.eps)
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        x = self.hook_normalized(x / scale)
        return x * self.w + self.b


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int = 0):
        super().__init__()
        H, D, dh = cfg.n_heads, cfg.d_model, cfg.d_head
        self.n_heads, self.d_head = H, dh
        self.noise = cfg.noise
        self.W_Q = nn.Parameter(torch.empty(H, D, dh))
        self.W_K = nn.Parameter(torch.empty(H, D, dh))
        self.W_V = nn.Parameter(torch.empty(H, D, dh))
        self.W_O = nn.Parameter(torch.empty(H, dh, D))
        if cfg.attn_bias:
            self.b_Q = nn.Parameter(torch.zeros(H, dh))
            self.b_K = nn.Parameter(torch.zeros(H, dh))
            self.b_V = nn.Parameter(torch.zeros(H, dh))
            self.b_O = nn.Parameter(torch.zeros(D))
        else:
            for name, shape in (("b_Q", (H, dh)), ("b_K", (H, dh)), ("b_V", (H, dh)), ("b_O", (D,))):
                self.register_buffer(name, torch.zeros(shape), persistent=False)
        self.attn_scale = math.sqrt(dh)
        self.hook_q = HookPoint()  # [batch, pos, head_index, d_head]
        self.hook_k = HookPoint()  # [batch, pos, head_index, d_head]
        self.hook_v = HookPoint()  # [batch, pos, head_index, d_head]
        self.hook_attn_scores = HookPoint()  # [batch, head_index, query_pos, key_pos]
        self.hook_pattern = HookPoint()  # [batch, head_index, query_pos, key_pos]
        self.hook_z = HookPoint()  # [batch, pos, head_index, d_head]
        if cfg.noise in ("fixed", "learned"):  # the random matrices, saved with the weights
            seed = cfg.noise_seed_used
            self.register_buffer("Z_QK", draw_layer_noise(seed, layer, H, D, "QK"))
            self.register_buffer("Z_OV", draw_layer_noise(seed, layer, H, D, "OV"))
        if cfg.noise == "learned":  # one trainable strength per head and matrix
            self.alpha_QK = nn.Parameter(torch.full((H,), float(cfg.noise_alpha)))
            self.alpha_OV = nn.Parameter(torch.full((H,), float(cfg.noise_alpha)))
        elif cfg.noise != "none":
            self.register_buffer("alpha_QK", torch.full((H,), float(cfg.noise_alpha)), persistent=False)
            self.register_buffer("alpha_OV", torch.full((H,), float(cfg.noise_alpha)), persistent=False)

    def noise_matrix(self, matrix: str) -> Float[Tensor, "n_heads d_model d_model"] | None:
        """``a Z`` per head for ``matrix`` "QK" or "OV" (``Z = I`` for identity noise); None
        without noise. Added to ``W_Q W_K^T`` resp. ``W_V W_O`` to give the effective matrix."""
        if self.noise == "none":
            return None
        alpha = self.alpha_QK if matrix == "QK" else self.alpha_OV
        if self.noise == "identity":
            eye = torch.eye(self.W_Q.shape[1], device=alpha.device, dtype=alpha.dtype)
            return alpha[:, None, None] * eye
        return alpha[:, None, None] * (self.Z_QK if matrix == "QK" else self.Z_OV)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        B, T, D = x.shape
        H, dh = self.n_heads, self.d_head
        # One matmul for q, k and v: [d_model, 3 * n_heads * d_head].
        w_qkv = torch.stack([self.W_Q, self.W_K, self.W_V]).permute(2, 0, 1, 3).reshape(D, 3 * H * dh)
        b_qkv = torch.stack([self.b_Q, self.b_K, self.b_V]).reshape(3 * H * dh)
        qkv = torch.addmm(b_qkv, x.reshape(B * T, D), w_qkv).view(B, T, 3, H, dh)
        q = self.hook_q(qkv[:, :, 0])
        k = self.hook_k(qkv[:, :, 1])
        v = self.hook_v(qkv[:, :, 2])
        if self.noise != "none":
            return self._attend_with_noise(x, q, k, v)
        z = self.hook_z(self._attend(q, k, v))
        out = torch.addmm(self.b_O, z.reshape(B * T, H * dh), self.W_O.reshape(H * dh, D))
        return out.view(B, T, D)

    def _attend(
        self,
        q: Float[Tensor, "batch pos head_index d_qk"],
        k: Float[Tensor, "batch pos head_index d_qk"],
        v: Float[Tensor, "batch pos head_index d_v"],
    ) -> Float[Tensor, "batch pos head_index d_v"]:
        """Causal attention with logits ``q k^T / sqrt(d_head)``: explicit (through hook_attn_scores
        and hook_pattern) when either is hooked, else fused. The scale stays that of ``d_head`` when
        the noise path widens q, k and v."""
        if _hooked(self.hook_attn_scores, self.hook_pattern):
            T = q.shape[1]
            scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / self.attn_scale
            causal = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
            scores = self.hook_attn_scores(scores.masked_fill(causal, float("-inf")))
            pattern = self.hook_pattern(scores.softmax(dim=-1))
            return torch.einsum("bhqk,bkhd->bqhd", pattern.to(v.dtype), v)
        return F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
            scale=1.0 / self.attn_scale,
        ).transpose(1, 2)  # fmt: skip

    def _attend_with_noise(
        self,
        x: Float[Tensor, "batch pos d_model"],
        q: Float[Tensor, "batch pos head_index d_head"],
        k: Float[Tensor, "batch pos head_index d_head"],
        v: Float[Tensor, "batch pos head_index d_head"],
    ) -> Float[Tensor, "batch pos d_model"]:
        """Attention with the effective matrices ``W_Q W_K^T + a Z_QK`` and ``W_V W_O + a Z_OV``,
        by widening each head's queries, keys and values (module docstring)."""
        B, T, D = x.shape
        H, dh = self.n_heads, self.d_head
        x = x.to(q.dtype)
        x_heads = x.unsqueeze(2).expand(B, T, H, D)
        if self.noise == "identity":
            xq, xv = x_heads, x_heads
        else:  # x Z for every head and both matrices in one matmul: [D, 2 * H * D]
            z_all = torch.cat([self.Z_QK, self.Z_OV]).permute(1, 0, 2).reshape(D, 2 * H * D)
            xz = (x.reshape(B * T, D) @ z_all.to(x.dtype)).view(B, T, 2, H, D)
            xq, xv = xz[:, :, 0], xz[:, :, 1]
        q = torch.cat([q, xq * self.alpha_QK.to(x.dtype)[:, None]], dim=-1)
        k = torch.cat([k, x_heads], dim=-1)
        v = torch.cat([v, xv * self.alpha_OV.to(x.dtype)[:, None]], dim=-1)
        zz = self._attend(q, k, v)
        z = self.hook_z(zz[..., :dh])
        out = torch.addmm(self.b_O, z.reshape(B * T, H * dh), self.W_O.reshape(H * dh, D))
        return out.view(B, T, D) + zz[..., dh:].sum(dim=2)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        if cfg.mlp_bias:
            self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
            self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        else:
            self.register_buffer("b_in", torch.zeros(cfg.d_mlp), persistent=False)
            self.register_buffer("b_out", torch.zeros(cfg.d_model), persistent=False)
        self.act_fn = cfg.act_fn
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]
        self.hook_post = HookPoint()  # [batch, pos, d_mlp]

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        B, T, D = x.shape
        pre = self.hook_pre(torch.addmm(self.b_in, x.reshape(B * T, D), self.W_in).view(B, T, -1))
        if self.act_fn == "relu":
            post = F.relu(pre)
        elif self.act_fn == "gelu":
            post = F.gelu(pre)
        else:  # gelu_new: the tanh approximation used by GPT-2
            post = F.gelu(pre, approximate="tanh")
        post = self.hook_post(post)
        return torch.addmm(self.b_out, post.reshape(B * T, -1), self.W_out).view(B, T, D)


class TransformerBlock(nn.Module):
    """One block. Pre-LN: ``x + attn(LN(x))``; post-LN: ``LN(x + attn(x))``; "none": ``x + attn(x)``.

    ``hook_resid_mid`` and ``hook_resid_post`` always hold what the next sublayer or block reads,
    so for post-LN they are taken after the LayerNorm.
    """

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.norm = cfg.norm
        self.attn_only = cfg.attn_only
        self.ln1 = LayerNorm(cfg) if cfg.norm != "none" else nn.Identity()
        self.attn = Attention(cfg, layer)
        if not self.attn_only:
            self.ln2 = LayerNorm(cfg) if cfg.norm != "none" else nn.Identity()
            self.mlp = MLP(cfg)
            self.hook_mlp_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_pre = HookPoint()  # [batch, pos, d_model]
        self.hook_attn_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_mid = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_post = HookPoint()  # [batch, pos, d_model]

    def forward(self, resid_pre: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        resid_pre = self.hook_resid_pre(resid_pre)
        if self.norm == "post":
            attn_out = self.hook_attn_out(self.attn(resid_pre))
            resid_mid = self.hook_resid_mid(self.ln1(resid_pre + attn_out))
            if self.attn_only:
                return self.hook_resid_post(resid_mid)
            mlp_out = self.hook_mlp_out(self.mlp(resid_mid))
            return self.hook_resid_post(self.ln2(resid_mid + mlp_out))
        # pre-LN, or no normalisation (ln1 and ln2 are identities then)
        attn_out = self.hook_attn_out(self.attn(self.ln1(resid_pre)))
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        if self.attn_only:
            return self.hook_resid_post(resid_mid)
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid_mid)))
        return self.hook_resid_post(resid_mid + mlp_out)


class Unembed(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab_out))
        if cfg.unembed_bias:
            self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab_out))
        else:
            self.register_buffer("b_U", torch.zeros(cfg.d_vocab_out), persistent=False)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab_out"]:
        B, T, D = x.shape
        return torch.addmm(self.b_U, x.reshape(B * T, D), self.W_U).view(B, T, -1)


class Transformer(HookedRootModule):
    """Decoder-only transformer; a ``HookedRootModule`` with TransformerLens names and shapes.

    >>> cfg = ModelConfig(n_layers=2, d_model=32, n_ctx=13, d_vocab=201, norm="post", gamma=1.0)
    >>> model = Transformer(cfg)
    >>> logits, cache = model.run_with_cache(tokens)    # cache["blocks.0.attn.hook_pattern"]
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if not isinstance(cfg, ModelConfig):
            raise TypeError(f"Transformer expects a ModelConfig; got {type(cfg).__name__}")
        cfg.validate()
        self.cfg = cfg
        self.embed = Embed(cfg)
        self.hook_embed = HookPoint()  # [batch, pos, d_model]
        self.pos_embed = PosEmbed(cfg)
        self.hook_pos_embed = HookPoint()  # [batch, pos, d_model]
        self.blocks = nn.ModuleList([TransformerBlock(cfg, layer) for layer in range(cfg.n_layers)])
        if cfg.norm == "pre":
            self.ln_final = LayerNorm(cfg)
        self.unembed = Unembed(cfg)
        self.init_weights()
        self.setup()

    # -- initialisation -------------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """(Re)draw every weight matrix from the config's distribution; gains 1, biases 0.

        Deterministic given ``seed`` (default: ``cfg.seed``) and independent of torch's global RNG.
        Learned noise strengths are reset to ``cfg.noise_alpha``; the noise matrices are not
        redrawn (they are drawn at construction from ``cfg.noise_seed``, else ``cfg.seed``). Noise
        never changes the weights drawn: models that differ only in their noise settings start
        from the same W's.
        """
        gen = torch.Generator().manual_seed(self.cfg.seed if seed is None else seed)
        for name, p in self.named_parameters():
            d_in = fan_in(self.cfg, name)
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("alpha_QK", "alpha_OV"):  # learned noise strengths start at noise_alpha
                p.fill_(self.cfg.noise_alpha)
                continue
            if d_in is None:
                p.fill_(1.0 if leaf == "w" else 0.0)
                continue
            scale = init_scale(self.cfg, d_in)
            if leaf == "W_E":
                scale *= self.cfg.embed_init_scale
            sample = torch.empty(p.shape, dtype=torch.float32)
            if self.cfg.init == "normal":
                sample.normal_(0.0, scale, generator=gen)
            else:
                sample.uniform_(-scale, scale, generator=gen)
            p.copy_(sample)

    # -- forward --------------------------------------------------------------------------------
    def forward(
        self,
        tokens: Int[Tensor, "batch pos"],
        return_type: str | None = "logits",
        stop_at_layer: int | None = None,
    ) -> Float[Tensor, "batch pos d_vocab_out"] | Float[Tensor, "batch pos d_model"] | None:
        """Logits for every position.

        ``stop_at_layer=l`` returns the residual stream entering block ``l`` instead (what
        ``blocks.{l}.hook_resid_pre`` sees), running only the blocks before it; ``return_type=None``
        runs the model for its hooks and returns nothing.
        """
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, pos]; got shape {tuple(tokens.shape)}")
        if tokens.shape[1] > self.cfg.n_ctx:
            raise ValueError(f"sequence length {tokens.shape[1]} exceeds n_ctx={self.cfg.n_ctx}")
        if return_type not in ("logits", None):
            raise ValueError(f"return_type must be 'logits' or None; got {return_type!r}")
        check_tokens(tokens, self.cfg.d_vocab)
        tokens = tokens.to(self.embed.W_E.device)
        resid = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        blocks = self.blocks if stop_at_layer is None else self.blocks[:stop_at_layer]
        for block in blocks:
            resid = block(resid)
        if stop_at_layer is not None:
            return resid
        if self.cfg.norm == "pre":
            resid = self.ln_final(resid)
        if return_type is None:
            return None
        return self.unembed(resid)

    def run_with_cache(
        self,
        *model_args: Any,
        return_cache_object: bool = True,
        remove_batch_dim: bool = False,
        **kwargs: Any,
    ) -> tuple[Any, ActivationCache | dict[str, Tensor]]:
        """Run and cache activations, as ``HookedTransformer.run_with_cache`` does: an
        ``ActivationCache`` by default (``names_filter`` keeps only what you need)."""
        check_names_filter(kwargs.get("names_filter"), list(self.hook_dict))
        out, cache = super().run_with_cache(*model_args, remove_batch_dim=remove_batch_dim, **kwargs)
        if return_cache_object:
            cache = ActivationCache(cache, self, has_batch_dim=not remove_batch_dim)
        return out, cache

    # -- device bookkeeping: TransformerLens utilities read cfg.device ----------------------------
    def _apply(self, fn, recurse=True):  # noqa: ANN001 - torch's signature
        out = super()._apply(fn, recurse)
        self.cfg.device = str(self.embed.W_E.device)
        return out

    # -- TransformerLens-style weight accessors, stacked over layers -----------------------------
    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return self.embed.W_E

    @property
    def W_pos(self) -> Float[Tensor, "n_ctx d_model"]:
        return self.pos_embed.W_pos

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab_out"]:
        return self.unembed.W_U

    @property
    def b_U(self) -> Float[Tensor, " d_vocab_out"]:
        return self.unembed.b_U

    def _stack(self, module: str, name: str) -> Tensor:
        return torch.stack([getattr(getattr(b, module), name) for b in self.blocks])

    @property
    def W_Q(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("attn", "W_Q")

    @property
    def W_K(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("attn", "W_K")

    @property
    def W_V(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("attn", "W_V")

    @property
    def W_O(self) -> Float[Tensor, "n_layers n_heads d_head d_model"]:
        return self._stack("attn", "W_O")

    @property
    def b_Q(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stack("attn", "b_Q")

    @property
    def b_K(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stack("attn", "b_K")

    @property
    def b_V(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stack("attn", "b_V")

    @property
    def b_O(self) -> Float[Tensor, "n_layers d_model"]:
        return self._stack("attn", "b_O")

    @property
    def W_in(self) -> Float[Tensor, "n_layers d_model d_mlp"]:
        return self._stack("mlp", "W_in")

    @property
    def W_out(self) -> Float[Tensor, "n_layers d_mlp d_model"]:
        return self._stack("mlp", "W_out")

    @property
    def QK(self) -> FactoredMatrix:
        """Per-head bilinear attention form ``W_Q W_K^T``: [n_layers, n_heads, d_model, d_model].

        With attention noise, the effective ``W_Q W_K^T + a Z_QK``, factored as
        ``[W_Q | a Z_QK] @ [W_K^T ; I]`` (inner dimension ``d_head + d_model``).
        """
        if self.cfg.noise == "none":
            return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))
        return self._with_noise(self.W_Q, self.W_K.transpose(-2, -1), "QK")

    @property
    def OV(self) -> FactoredMatrix:
        """Per-head output-value map ``W_V W_O``: [n_layers, n_heads, d_model, d_model].

        With attention noise, the effective ``W_V W_O + a Z_OV``, factored as
        ``[W_V | a Z_OV] @ [W_O ; I]``.
        """
        if self.cfg.noise == "none":
            return FactoredMatrix(self.W_V, self.W_O)
        return self._with_noise(self.W_V, self.W_O, "OV")

    def _with_noise(
        self,
        A: Float[Tensor, "n_layers n_heads d_model d_head"],
        B: Float[Tensor, "n_layers n_heads d_head d_model"],
        matrix: str,
    ) -> FactoredMatrix:
        noise = torch.stack([block.attn.noise_matrix(matrix) for block in self.blocks]).to(A.dtype)
        eye = torch.eye(self.cfg.d_model, dtype=B.dtype, device=B.device).expand(*B.shape[:2], -1, -1)
        return FactoredMatrix(torch.cat([A, noise], dim=-1), torch.cat([B, eye], dim=-2))

    # -- save / load: safetensors weights, JSON config and metadata in its header ---------------
    def save(self, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
        """Write weights and config to one ``.safetensors`` file, atomically (temp file + rename).

        ``metadata`` (JSON-serialisable, e.g. training history) is stored in the file header.
        """
        path = Path(path)
        header = {
            "format": FORMAT_NAME,
            "format_version": str(FORMAT_VERSION),
            "config": self.cfg.to_json(),
            "metadata": json.dumps(metadata or {}, sort_keys=True),
        }
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        atomic_save_safetensors(tensors, path, header)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> Transformer:
        """Rebuild a model saved by :meth:`save`. Never unpickles: safetensors + JSON only."""
        tensors, header = read_safetensors(path)
        if header.get("format") != FORMAT_NAME:
            raise CheckpointError(path, f"not a reasonlens model file (format={header.get('format')!r})")
        try:
            cfg = ModelConfig.from_json(header["config"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(path, f"config unreadable ({type(err).__name__}: {err})") from err
        model = cls(cfg)
        load_checked(model, tensors, path)
        return model.to(device) if device is not None else model

    @staticmethod
    def read_config(path: str | os.PathLike) -> ModelConfig:
        """The :class:`ModelConfig` stored by :meth:`save`, without loading the weights."""
        header = read_header(path)
        try:
            return ModelConfig.from_json(header["config"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(path, f"config unreadable ({type(err).__name__}: {err})") from err

    @staticmethod
    def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
        """The ``metadata`` dict stored by :meth:`save`, without loading the weights."""
        header = read_header(path)
        try:
            return json.loads(header.get("metadata", "{}"))
        except ValueError as err:
            raise CheckpointError(path, f"metadata unreadable ({err})") from err

    def n_params(self, include_embeddings: bool = True) -> int:
        skip = () if include_embeddings else ("embed.W_E", "pos_embed.W_pos")
        return sum(p.numel() for n, p in self.named_parameters() if n not in skip)

    # -- TransformerLens export ------------------------------------------------------------------
    def to_transformerlens(self):  # noqa: ANN201 - HookedTransformer (3.x) or TransformerBridge (4.x)
        """The same weights in a stock TransformerLens model, whichever line is installed.

        TransformerLens 3.x: a ``transformer_lens.HookedTransformer``. TransformerLens 4.x (which
        removed it): a ``transformer_lens.model_bridge.TransformerBridge`` around TransformerLens's
        native model. Only pre-LN and no-norm models convert: TransformerLens has no post-LN
        architecture.
        """
        from reasonlens.models.tl_compat import to_transformerlens

        return to_transformerlens(self)

    def to_hooked_transformer(self):  # noqa: ANN201 - returns transformer_lens.HookedTransformer
        """The same weights in a stock ``transformer_lens.HookedTransformer`` (TransformerLens 3.x only;
        on 4.x an ImportError points to :meth:`to_transformerlens`).
        """
        from reasonlens.models.tl_compat import to_hooked_transformer

        return to_hooked_transformer(self)

    def to_transformer_bridge(self):  # noqa: ANN201 - returns transformer_lens TransformerBridge
        """The same weights in a native ``TransformerBridge`` (TransformerLens 4.x only)."""
        from reasonlens.models.tl_compat import to_transformer_bridge

        return to_transformer_bridge(self)


def check_tokens(tokens: Int[Tensor, "batch pos"], d_vocab: int) -> None:
    """Raise a ValueError naming the first token outside ``0..d_vocab-1``."""
    if tokens.numel() == 0:
        return
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise ValueError(f"tokens must be integers; got dtype {tokens.dtype}")
    bad = (tokens < 0) | (tokens >= d_vocab)
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"token {int(tokens[idx])} at {list(idx)} is outside the model's vocabulary of {d_vocab} "
            f"(0..{d_vocab - 1}); was this data made for another model?"
        )


def check_names_filter(names_filter: Any, hook_names: list[str]) -> None:
    """Raise a ValueError when ``names_filter`` names a hook the model lacks or matches none."""
    if names_filter is None:
        return
    if isinstance(names_filter, str):
        names_filter = [names_filter]
    if callable(names_filter):
        if not any(names_filter(n) for n in hook_names):
            raise ValueError("run_with_cache: names_filter matches none of the model's hooks")
        return
    missing = [n for n in names_filter if n not in hook_names]
    if missing:
        raise ValueError(
            f"run_with_cache: no hook named {missing[0]!r} in this model (hooks look like "
            f"{hook_names[0]!r} .. {hook_names[-1]!r})"
        )
    if not list(names_filter):
        raise ValueError("run_with_cache: names_filter is empty")


def load_checked(module: nn.Module, tensors: dict[str, Tensor], path: str | os.PathLike) -> None:
    """``module.load_state_dict(tensors, strict=True)``, a mismatch raised as a :class:`CheckpointError`."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    if missing or extra:
        raise CheckpointError(
            path, f"tensors do not match its own config (missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for k, v in own.items():
        if tuple(v.shape) != tuple(tensors[k].shape):
            raise CheckpointError(
                path,
                f"shape mismatch with its own config: {k} is {tuple(tensors[k].shape)}, "
                f"the config makes it {tuple(v.shape)}",
            )
    module.load_state_dict(tensors, strict=True)
