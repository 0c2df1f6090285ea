"""Conversion to a stock ``transformer_lens.HookedTransformer`` (TransformerLens 3.x only).

TransformerLens 4.0 removed ``HookedTransformer``; 3.9 is the last line that has it. Our parameter
names and shapes are TransformerLens's, so the conversion is a config translation and a
``load_state_dict``.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from reasonlens.models.transformer import Transformer


def hooked_transformer_available() -> bool:
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:
        return False
    return True


def to_hooked_transformer(model: Transformer):  # noqa: ANN201
    cfg = model.cfg
    if cfg.norm == "post":
        raise ValueError(
            "to_hooked_transformer: TransformerLens has no post-LN architecture; only norm='pre' "
            "or norm='none' models convert (this model has norm='post')"
        )
    if cfg.noise != "none":
        raise ValueError(
            f"to_hooked_transformer: TransformerLens has no attention noise; only noise='none' models "
            f"convert (this model has noise={cfg.noise!r})"
        )
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError as err:  # TransformerLens >= 4.0
        raise ImportError(
            "to_hooked_transformer needs TransformerLens 3.x (HookedTransformer was removed in "
            "4.0); install with `pip install -c constraints.txt -e .` to get transformer-lens 3.9"
        ) from err

    tl_cfg = HookedTransformerConfig(
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_ctx=cfg.n_ctx,
        d_head=cfg.d_head,
        n_heads=cfg.n_heads,
        d_mlp=cfg.d_mlp if not cfg.attn_only else None,
        attn_only=cfg.attn_only,
        d_vocab=cfg.d_vocab,
        d_vocab_out=cfg.d_vocab_out,
        act_fn=cfg.act_fn,
        normalization_type="LN" if cfg.norm == "pre" else None,
        positional_embedding_type="standard",
        eps=cfg.ln_eps,
        default_prepend_bos=False,
        device=str(model.W_E.device),
        dtype=model.W_E.dtype,
    )
    with warnings.catch_warnings():  # 3.9 announces its own removal in 4.0
        warnings.simplefilter("ignore", DeprecationWarning)
        tl_model = HookedTransformer(tl_cfg)
    # Our disabled biases are zero buffers: pass them explicitly so every TL parameter is set.
    state = {k: v for k, v in model.state_dict(keep_vars=False).items()}
    for name, buf in model.named_buffers():
        state.setdefault(name, buf)
    tl_state = tl_model.state_dict()
    missing = [k for k in tl_state if k not in state and not k.endswith((".mask", ".IGNORE"))]
    if missing:
        raise RuntimeError(f"to_hooked_transformer: no value for TransformerLens parameter(s) {missing}")
    with torch.no_grad():
        for k, v in tl_state.items():
            if k in state:
                v.copy_(state[k].to(v.dtype))
    return tl_model
