"""Export to a stock TransformerLens model: ``HookedTransformer`` on 3.x, ``TransformerBridge`` on 4.x.

TransformerLens 4.0 removed ``HookedTransformer``; 3.9 is the last line that has it. On 4.x the
export target is a ``TransformerBridge`` around TransformerLens's own native model, built from a
config (no HuggingFace model). Our parameter names and shapes are TransformerLens's (the
``HookedTransformer`` convention), so both exports are a config translation plus one state dict
(:func:`tl_state_dict`): loaded as-is into a ``HookedTransformer``, and through TransformerLens's
``convert_tl_checkpoint`` into a bridge.
"""

from __future__ import annotations

import warnings
from importlib import metadata
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from reasonlens.models.transformer import Transformer


def transformerlens_version() -> str:
    """The installed transformer-lens version, e.g. ``"3.9.0"``."""
    return metadata.version("transformer-lens")


def hooked_transformer_available() -> bool:
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:
        return False
    return True


def transformer_bridge_available() -> bool:
    try:
        import transformer_lens.model_bridge.sources.native  # noqa: F401
        from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint  # noqa: F401
    except ImportError:
        return False
    return True


def _check_exportable(model: Transformer, fn: str, target: str) -> None:
    cfg = model.cfg
    if cfg.norm == "post":
        raise ValueError(
            f"{fn}: TransformerLens has no post-LN architecture (transformer-lens "
            f"{transformerlens_version()}, {target}); only norm='pre' or norm='none' models "
            "convert (this model has norm='post')"
        )
    if cfg.noise != "none":
        raise ValueError(
            f"{fn}: TransformerLens has no attention noise; only noise='none' models "
            f"convert (this model has noise={cfg.noise!r})"
        )


def tl_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """The weights under ``HookedTransformer`` names and shapes (``blocks.0.attn.W_Q``, ...).

    Our disabled biases are zero buffers: they are included so every TransformerLens parameter is set.
    """
    state = dict(model.state_dict(keep_vars=False))
    for name, buf in model.named_buffers():
        state.setdefault(name, buf)
    return state


def to_transformerlens(model: Transformer):  # noqa: ANN201
    """``HookedTransformer`` where the installed TransformerLens has it (3.x), else ``TransformerBridge``."""
    if hooked_transformer_available():
        return to_hooked_transformer(model)
    return to_transformer_bridge(model)


def to_hooked_transformer(model: Transformer):  # noqa: ANN201
    _check_exportable(model, "to_hooked_transformer", "HookedTransformer")
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError as err:  # TransformerLens >= 4.0
        raise ImportError(
            f"to_hooked_transformer needs TransformerLens 3.x, but transformer-lens "
            f"{transformerlens_version()} is installed (HookedTransformer was removed in 4.0). Use "
            "model.to_transformerlens() (a TransformerBridge on 4.x), or install transformer-lens "
            "3.9 with `pip install -c constraints.txt -e .`"
        ) from err

    tl_cfg = HookedTransformerConfig(
        **_tl_config_fields(model), device=str(model.W_E.device), dtype=model.W_E.dtype
    )
    with warnings.catch_warnings():  # 3.9 announces its own removal in 4.0
        warnings.simplefilter("ignore", DeprecationWarning)
        tl_model = HookedTransformer(tl_cfg)
    state = tl_state_dict(model)
    tl_state = tl_model.state_dict()
    missing = [k for k in tl_state if k not in state and not k.endswith((".mask", ".IGNORE"))]
    if missing:
        raise RuntimeError(f"to_hooked_transformer: no value for TransformerLens parameter(s) {missing}")
    with torch.no_grad():
        for k, v in tl_state.items():
            if k in state:
                v.copy_(state[k].to(v.dtype))
    return tl_model


def _tl_config_fields(model: Transformer) -> dict:
    """The fields TransformerLens's configs (HookedTransformerConfig, TransformerBridgeConfig) share
    for one of our models."""
    cfg = model.cfg
    return dict(
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
    )


def to_transformer_bridge(model: Transformer):  # noqa: ANN201
    _check_exportable(model, "to_transformer_bridge", "TransformerBridge")
    if not transformer_bridge_available():
        raise ImportError(
            f"to_transformer_bridge needs TransformerLens 4.x (the native TransformerBridge), but "
            f"transformer-lens {transformerlens_version()} is installed. Use model.to_transformerlens() "
            "(a HookedTransformer on 3.x), or install 4.x with `pip install -c constraints-tl4.txt -e .`"
        )
    import transformer_lens.model_bridge.sources.native  # noqa: F401 - registers boot_native
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    device, dtype = model.W_E.device, model.W_E.dtype
    bridge_cfg = TransformerBridgeConfig(
        **_tl_config_fields(model),
        init_weights=False,  # every weight is overwritten below
        device=str(device),
        dtype=dtype,
    )
    bridge = TransformerBridge.boot_native(bridge_cfg, device=device, dtype=dtype)
    state = {k: v.detach().to(device=device, dtype=dtype) for k, v in tl_state_dict(model).items()}
    bridge.load_state_dict(convert_tl_checkpoint(state, bridge_cfg), strict=True)
    return bridge
