"""The QK/OV "matching matrix" in token space, and how diagonal it is.

For layer ``l >= 1`` and head ``h`` of that layer, ``M(l)[t, s]`` is the attention logit that
layer ``l`` gives, at a position holding token ``t``, to a key position whose only content is what
layer ``l - 1``'s attention wrote when it copied token ``s`` there. In the matching mechanism, a
child position receives its parent ``s`` from layer ``l - 1`` and the current hop node ``t`` looks
for it in layer ``l``, so a model that matches has a diagonal-dominant ``M(l)``. Concretely::

    q_t   = N_q(E_t) W_Q[l, h] + b_Q[l, h]                        query of token t
    o_s   = (N_v(E_s) W_V[l-1] + b_V[l-1]) W_O[l-1] + b_O[l-1]    layer l-1 output copying s
                                                                  (summed over its heads)
    k_s   = N_k(o_s) W_K[l, h] + b_K[l, h]                        key that output produces
    M(l)  = q k^T / sqrt(d_head)                                  rows t, columns s

With attention noise (``ModelConfig.noise``), ``W_V W_O`` and ``W_Q W_K^T`` above are the
effective matrices the model computes with: ``o_s`` gains ``N_v(E_s) a Z_OV[l-1]`` (summed over
heads) and ``M(l)`` gains ``N_q(E_t) a Z_QK[l, h] N_k(o_s)^T / sqrt(d_head)``.

``E`` holds the token-embedding rows ``W_E[tokens]`` (the in-distribution tokens by default);
position embeddings, MLPs and whatever else the residual stream holds are left out, so each vector
is taken on its own. ``N`` carries a vector from where it is written to where it is read, through
every LayerNorm the architecture puts on that path (each LayerNorm applied in full, gain and bias
included, to the vector alone):

- no normalisation: ``N`` is the identity;
- pre-LN (``x + attn(LN1(x))``): the stream itself is never normalised, only the attention input,
  so ``N_q = N_k = LN1`` of block ``l`` and ``N_v = LN1`` of block ``l - 1``;
- post-LN (``LN1(x + attn(x))`` then ``LN2(x + mlp(x))``): a vector is normalised by ``LN1`` and
  ``LN2`` of every block it passes. The embedding passes blocks ``0 .. l-1`` before layer ``l``
  reads it (``N_q``) and blocks ``0 .. l-2`` before layer ``l - 1`` does (``N_v``; none for
  ``l = 1``); layer ``l - 1``'s output passes ``LN1`` and ``LN2`` of block ``l - 1`` (``N_k``).

The query each layer actually reads. The embedding query above is right for layer 1 only: layer
``l >= 2`` reads what the layers before it wrote at the query position (in the mechanism, the
node one hop further). :func:`stream_matching_matrix` therefore takes the query from real inputs:
the attention input of block ``l`` at the query position (``blocks.{l}.hook_resid_pre``, through
LN1 for pre-LN), averaged over the examples whose current node (the query for ``l = 1``, the
hop-1 node for ``l = 2``, ...) is the row's token; position embeddings are then in the stream,
and the keys include the pair positions' embeddings (``key_positions``).
:func:`matching_matrix_variants` tabulates the embedding query (ID tokens, with positions, OOD
tokens) beside the stream query on ID and OOD examples.

Diagonal dominance: the fraction of rows whose maximum is on the diagonal (chance ``1 / V``) and
the mean over rows of the diagonal entry's z-score within its row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from reasonlens.tasks.matching import MatchingDataset

MATRIX_COLUMNS = ["layer", "head", "query_token", "key_token", "value"]
SCORE_COLUMNS = ["layer", "head", "diag_argmax_frac", "diag_zscore", "chance", "n_tokens"]


def _layer_norm(x: Float[Tensor, "v d"], ln: torch.nn.Module) -> Float[Tensor, "v d"]:
    return F.layer_norm(x, x.shape[-1:], ln.w, ln.b, ln.eps)


def carry(
    model: torch.nn.Module, x: Float[Tensor, "v d_model"], written_at: int, read_by: int
) -> Float[Tensor, "v d_model"]:
    """What block ``read_by``'s attention sees of a vector ``x`` that enters the residual stream in
    block ``written_at`` (0 for the embedding; ``l`` for the output of block ``l``'s attention):
    for post-LN, ``x`` passes LN1 and LN2 of blocks ``written_at .. read_by - 1``; for pre-LN, the
    attention input is ``LN1`` of block ``read_by``; without normalisation, ``x`` itself.
    """
    norm = model.cfg.norm
    if norm == "none":
        return x
    if norm == "pre":
        return _layer_norm(x, model.blocks[read_by].ln1)
    for block in model.blocks[written_at:read_by]:
        x = _layer_norm(x, block.ln1)
        if not block.attn_only:
            x = _layer_norm(x, block.ln2)
    return x


def default_tokens(model: torch.nn.Module) -> list[int]:
    """The in-distribution tokens of a matching vocabulary ``2 * n_tokens + 1``: ``1..n_tokens``."""
    return list(range(1, (model.cfg.d_vocab - 1) // 2 + 1))


def stream(model: torch.nn.Module, x: Float[Tensor, "v d_model"], upto: int) -> Float[Tensor, "v d_model"]:
    """What the residual stream holds of a vector ``x`` written into it by the embedding, when it
    enters block ``upto``: for post-LN, ``x`` after LN1 and LN2 of blocks ``0 .. upto - 1``;
    otherwise ``x`` itself (pre-LN and no-norm streams are never normalised)."""
    if model.cfg.norm != "post":
        return x
    for block in model.blocks[:upto]:
        x = _layer_norm(x, block.ln1)
        if not block.attn_only:
            x = _layer_norm(x, block.ln2)
    return x


def pair_positions(seq_len: int) -> tuple[list[int], list[int], int]:
    """Parent positions, child positions and the query position of a single-chain input."""
    n_pairs = (seq_len - 1) // 2
    return list(range(0, 2 * n_pairs, 2)), list(range(1, 2 * n_pairs, 2)), 2 * n_pairs


def _check(model: torch.nn.Module, layer: int, tokens: Sequence[int]) -> None:
    n_layers = model.cfg.n_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer < n_layers:
        raise ValueError(f"matching matrix layer must be in 1..{n_layers - 1}; got {layer!r}")
    if not tokens or min(tokens) < 0 or max(tokens) >= model.cfg.d_vocab:
        raise ValueError(f"tokens must be a non-empty list of ids in [0, {model.cfg.d_vocab}); got {tokens}")


@torch.no_grad()
def _keys_in(
    model: torch.nn.Module, layer: int, tokens: Sequence[int], positions: bool, seq_len: int
) -> Float[Tensor, "v d_model"]:
    """What layer ``layer`` reads (its attention input) at a child position whose parent ``s``
    layer ``layer - 1`` copied there, for each ``s`` in ``tokens``, with the noise-free or
    effective OV circuit; with ``positions``, the parent's and the child's position embeddings
    (means over the pair positions) are in the stream too."""
    E = model.W_E[torch.tensor(list(tokens), device=model.W_E.device)].float()
    src = E
    if positions:
        parents, children, _ = pair_positions(seq_len)
        src = E + model.W_pos[parents].float().mean(0)
    prev = model.blocks[layer - 1].attn
    src = carry(model, src, 0, layer - 1)
    v = torch.einsum("vd,hde->hve", src, prev.W_V) + prev.b_V[:, None, :]
    o = torch.einsum("hve,hed->vd", v, prev.W_O) + prev.b_O
    if (noise_ov := prev.noise_matrix("OV")) is not None:  # effective W_OV = W_V W_O + a Z_OV
        o = o + torch.einsum("vd,hde->ve", src, noise_ov)
    if positions:
        o = o + stream(model, model.W_pos[children].float().mean(0, keepdim=True), layer - 1)
    return carry(model, o, layer - 1, layer)


@torch.no_grad()
def _matrix(
    model: torch.nn.Module, layer: int, q_in: Float[Tensor, "t d_model"], k_in: Float[Tensor, "s d_model"]
) -> Float[Tensor, "head t s"]:
    cur = model.blocks[layer].attn
    q = torch.einsum("vd,hde->hve", q_in, cur.W_Q) + cur.b_Q[:, None, :]
    k = torch.einsum("vd,hde->hve", k_in, cur.W_K) + cur.b_K[:, None, :]
    M = torch.einsum("hte,hse->hts", q, k)
    if (noise_qk := cur.noise_matrix("QK")) is not None:  # effective W_QK = W_Q W_K^T + a Z_QK
        M = M + torch.einsum("td,hde,se->hts", q_in, noise_qk, k_in)
    return M.cpu() / cur.attn_scale


@torch.no_grad()
def matching_matrix_tensor(
    model: torch.nn.Module,
    layer: int,
    tokens: Sequence[int] | None = None,
    positions: bool = False,
    seq_len: int | None = None,
) -> Float[Tensor, "head v v"]:
    """``M(layer)`` for every head of ``layer`` with the token embedding as the query (see the
    module docstring); rows = query tokens. With ``positions``, the query holds the query
    position's embedding and keys the pair positions' (means; ``seq_len`` default ``n_ctx``)."""
    tokens = default_tokens(model) if tokens is None else list(tokens)
    _check(model, layer, tokens)
    seq_len = model.cfg.n_ctx if seq_len is None else seq_len
    E = model.W_E[torch.tensor(tokens, device=model.W_E.device)].float()
    if positions:
        E = E + model.W_pos[pair_positions(seq_len)[2]].float()
    q_in = carry(model, E, 0, layer)
    return _matrix(model, layer, q_in, _keys_in(model, layer, tokens, positions, seq_len))


@torch.no_grad()
def stream_queries(
    model: torch.nn.Module, inputs: Int[Tensor, "n pos"], layer: int, position: int
) -> Float[Tensor, "n d_model"]:
    """What layer ``layer``'s attention reads at ``position``: the residual stream entering the
    block (``blocks.{layer}.hook_resid_pre``), through the block's LN1 for pre-LN."""
    resid = model(inputs, stop_at_layer=layer)[:, position].float()
    return carry(model, resid, layer, layer) if model.cfg.norm == "pre" else resid


@torch.no_grad()
def stream_matching_matrix_tensor(
    model: torch.nn.Module,
    data: MatchingDataset,
    layer: int,
    key_positions: bool = True,
) -> tuple[Float[Tensor, "head v v"], list[int]]:
    """``M(layer)`` with the query layer ``layer`` actually reads: the attention input at the
    query position of every example of ``data`` (a ``MatchingDataset``), averaged over the
    examples whose current node (``paths[:, layer - 1]``: the query for layer 1, the first-hop
    node for layer 2, ...) is the row's token. Rows and columns are the tokens that occur as
    current nodes (sorted); keys are as in :func:`matching_matrix_tensor` (with the pair
    positions' embeddings when ``key_positions``). Returns the matrix and the tokens."""
    if layer > data.paths.shape[1] - 1:
        raise ValueError(f"layer {layer} needs examples with at least {layer} hops")
    _check(model, layer, [1])
    node = data.paths[:, layer - 1]
    x = stream_queries(model, data.inputs, layer, data.query_pos)
    tokens = sorted(set(node[node >= 0].tolist()))
    _check(model, layer, tokens)
    idx = torch.tensor(tokens)
    q_in = torch.stack([x[(node == t).to(x.device)].mean(0) for t in idx.tolist()])
    k_in = _keys_in(model, layer, tokens, key_positions, data.seq_len)
    return _matrix(model, layer, q_in, k_in), tokens


def _tidy(M: Float[Tensor, "head v v"], layer: int, tokens: Sequence[int]) -> pd.DataFrame:
    M = M.numpy()
    H, V, _ = M.shape
    return pd.DataFrame(
        {
            "layer": layer,
            "head": np.repeat(np.arange(H), V * V),
            "query_token": np.tile(np.repeat(tokens, V), H),
            "key_token": np.tile(tokens, H * V),
            "value": M.reshape(-1),
        }
    )


def matching_matrix(
    model: torch.nn.Module,
    layers: Sequence[int] | None = None,
    tokens: Sequence[int] | None = None,
    positions: bool = False,
    seq_len: int | None = None,
) -> pd.DataFrame:
    """``M(l)`` with the embedding query for ``layers`` (default: 1..n_layers-1), tidy: one row
    per (layer, head, query token, key token)."""
    layers = list(range(1, model.cfg.n_layers)) if layers is None else list(layers)
    tokens = default_tokens(model) if tokens is None else list(tokens)
    frames = [
        _tidy(matching_matrix_tensor(model, layer, tokens, positions, seq_len), layer, tokens)
        for layer in layers
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=MATRIX_COLUMNS)


def stream_matching_matrix(
    model: torch.nn.Module,
    data: MatchingDataset,
    layers: Sequence[int] | None = None,
    key_positions: bool = True,
) -> pd.DataFrame:
    """:func:`stream_matching_matrix_tensor` for ``layers`` (default: 1 .. min(n_layers - 1, k)),
    tidy as :func:`matching_matrix`."""
    k = data.paths.shape[1] - 1
    layers = list(range(1, min(model.cfg.n_layers - 1, k) + 1)) if layers is None else list(layers)
    frames = []
    for layer in layers:
        M, tokens = stream_matching_matrix_tensor(model, data, layer, key_positions)
        frames.append(_tidy(M, layer, tokens))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=MATRIX_COLUMNS)


def matching_matrix_variants(
    model: torch.nn.Module,
    id_data: MatchingDataset,
    ood_data: MatchingDataset,
    n_tokens: int = 100,
) -> pd.DataFrame:
    """The matching matrix under every query definition, tidy with a ``variant`` column:

    - ``embedding``: the token embedding as the query, ID tokens (the original measure);
    - ``embedding_positions``: the same with the position embeddings in the stream;
    - ``embedding_ood``: the embedding query on the OOD tokens;
    - ``stream``: the query each layer actually reads, on ``id_data``;
    - ``stream_ood``: the same on ``ood_data`` (OOD examples).
    """
    ids = list(range(1, n_tokens + 1))
    oods = list(range(n_tokens + 1, 2 * n_tokens + 1))
    seq_len = id_data.seq_len
    parts = {
        "embedding": matching_matrix(model, tokens=ids),
        "embedding_positions": matching_matrix(model, tokens=ids, positions=True, seq_len=seq_len),
        "embedding_ood": matching_matrix(model, tokens=oods),
        "stream": stream_matching_matrix(model, id_data),
        "stream_ood": stream_matching_matrix(model, ood_data),
    }
    return pd.concat([df.assign(variant=v) for v, df in parts.items()], ignore_index=True)


def diagonal_dominance(M: Float[Tensor, "v v"]) -> dict[str, float]:
    """Fraction of rows whose maximum is on the diagonal; mean z-score of the diagonal in its row."""
    M = torch.as_tensor(M, dtype=torch.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"diagonal_dominance needs a square matrix; got shape {tuple(M.shape)}")
    diag = M.diagonal()
    argmax_frac = (M.argmax(dim=1) == torch.arange(M.shape[0])).double().mean()
    std = M.std(dim=1, correction=0).clamp_min(1e-12)
    z = (diag - M.mean(dim=1)) / std
    return {"diag_argmax_frac": float(argmax_frac), "diag_zscore": float(z.mean())}


def matching_scores(matrix: pd.DataFrame) -> pd.DataFrame:
    """Diagonal dominance of every (layer, head) matrix in a :func:`matching_matrix` table (per
    ``variant`` too when the table has that column)."""
    if "variant" in matrix.columns:
        frames = [
            matching_scores(df.drop(columns="variant")).assign(variant=v)
            for v, df in matrix.groupby("variant", sort=False)
        ]
        return pd.concat(frames, ignore_index=True)
    rows = []
    for (layer, head), df in matrix.groupby(["layer", "head"], sort=True):
        M = df.pivot(index="query_token", columns="key_token", values="value")
        if list(M.index) != list(M.columns):
            raise ValueError(f"layer {layer} head {head}: query and key tokens differ")
        scores = diagonal_dominance(torch.tensor(M.to_numpy()))
        rows.append({"layer": layer, "head": head, **scores, "chance": 1.0 / len(M), "n_tokens": len(M)})
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)
