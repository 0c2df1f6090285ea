"""What an answer-only multiplication model holds where it writes each answer digit.

Bai et al. (2025) find the running sum ``c_k`` linearly decodable at the answer positions of a
model that learned implicit CoT, and not in a model trained the standard way. This module asks the
same of any answer-only model of the package (no-CoT, stepwise-internalized, running-sum loss):

- :func:`answer_inputs`: the teacher-forced sequences in the model's format and the position that
  predicts answer digit 0 (``"nocot"``: ``input SEP #### answer``; ``"internalized"``:
  ``input SEP SEP #### answer``).
- :func:`answer_targets`: per-position targets, defined only at the position predicting digit
  ``k``: the running sum ``c_k`` and the column sum ``s_k = sum_{i+j=k} a_i b_j`` (continuous,
  ridge regression, R^2), the carry in ``c_{k-1} // 10``, the answer digit and digit ``k`` of every
  partial product ``a * b_i * 10^i`` (categorical).
- :func:`probe_answer_positions`: the toolkit's probes (with shuffled-label controls) of the
  residual stream entering block 0 and leaving every block, at those positions.
- :func:`answer_attention`: which operand digits each answer position attends to, per layer and
  head (the "which partial products" pattern), as a tidy table.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor

from reasonlens.analysis.attention import attention_patterns
from reasonlens.icot.internalize import final_format
from reasonlens.icot.running_sum import running_sums
from reasonlens.probes import probe_store
from reasonlens.probes.collect import collect_activations, resid_hooks
from reasonlens.tasks.multiplication import MultiplicationData

AnswerFormat = Literal["nocot", "internalized"]
ANSWER_FORMATS: tuple[str, ...] = ("nocot", "internalized")
CONTINUOUS: tuple[str, ...] = ("running_sum", "column_sum")


def _one_shape(data: MultiplicationData) -> tuple[int, int]:
    shapes = data.shapes
    if len(shapes) != 1:
        raise ValueError(f"answer-position analyses need one operand size per dataset; got {shapes}")
    return shapes[0]


def answer_inputs(data: MultiplicationData, fmt: AnswerFormat) -> tuple[Int[Tensor, "n pos"], int]:
    """Teacher-forced inputs in format ``fmt`` and the position predicting answer digit 0 (the
    ``####`` token; the same for every example, since one operand size means one layout)."""
    if fmt not in ANSWER_FORMATS:
        raise ValueError(f"fmt must be one of {ANSWER_FORMATS}; got {fmt!r}")
    _one_shape(data)
    batch = data.batch("nocot") if fmt == "nocot" else final_format(data)
    start = data.sep1 + (1 if fmt == "nocot" else 2)
    if not bool((start == start[0]).all()):
        raise ValueError("the answer starts at different positions in this data; use one operand size")
    return batch.inputs, int(start[0])


def answer_targets(data: MultiplicationData, start: int, width: int) -> dict[str, np.ndarray]:
    """Targets ``[n, width]``, defined (not NaN / not -1) only at ``start + k`` for answer digit
    ``k``: ``running_sum``, ``column_sum`` (floats), ``carry_in``, ``answer_digit`` and
    ``pp{i}.digit`` (digit ``k`` of partial product ``i``; ints)."""
    d1, d2 = _one_shape(data)
    n_ans = d1 + d2
    if start + n_ans > width:
        raise ValueError(f"answer positions {start}..{start + n_ans - 1} do not fit in width {width}")
    c = running_sums(data.a, data.b, d1, d2).numpy()  # [n, n_ans]
    carry_in = np.concatenate([np.zeros((len(c), 1), dtype=np.int64), c[:, :-1] // 10], axis=1)
    per_digit: dict[str, np.ndarray] = {
        "running_sum": c.astype(np.float64),
        "column_sum": (c - carry_in).astype(np.float64),
        "carry_in": carry_in,
        "answer_digit": c % 10,
    }
    pp = data.pp_digits.numpy()  # [n, d2, width]: -1 where a partial product has no such digit
    for i in range(d2):
        digits = np.full((len(c), n_ans), -1, dtype=np.int64)
        w = min(pp.shape[2], n_ans)
        digits[:, :w] = pp[:, i, :w]
        per_digit[f"pp{i}.digit"] = digits
    out = {}
    for name, v in per_digit.items():
        fill = np.nan if v.dtype.kind == "f" else -1
        full = np.full((len(c), width), fill, dtype=v.dtype)
        full[:, start : start + n_ans] = v
        out[name] = full
    return out


def probe_answer_positions(
    model: torch.nn.Module,
    data: MultiplicationData,
    fmt: AnswerFormat,
    solver: str = "closed_form",
    seed: int = 0,
    test_frac: float = 0.3,
    alpha: float = 1.0,
) -> pd.DataFrame:
    """Probes of every residual-stream layer at every answer position for :func:`answer_targets`.

    One row per (layer, answer digit, target): the toolkit's columns (``hook, layer, position,
    target, metric, score, control_score, selectivity, ...``; metric ``r2`` for the sums,
    ``accuracy`` otherwise) plus ``answer_digit``, with ``layer`` the depth in the stream: 0
    entering block 0 (embeddings), ``l + 1`` leaving block ``l``.
    """
    d1, d2 = _one_shape(data)
    tokens, start = answer_inputs(data, fmt)
    positions = list(range(start, start + d1 + d2))
    hooks = resid_hooks(model.cfg.n_layers)
    store = collect_activations(model, tokens, hooks, positions)
    targets = answer_targets(data, start, tokens.shape[1])
    table = probe_store(store, targets, solver=solver, seed=seed, test_frac=test_frac, alpha=alpha)
    table["layer"] = table.hook.map({h: depth for depth, h in enumerate(hooks)})
    table.insert(3, "answer_digit", table.position - start)
    return table


@torch.no_grad()
def answer_attention(
    model: torch.nn.Module, data: MultiplicationData, fmt: AnswerFormat, batch_size: int = 512
) -> pd.DataFrame:
    """Mean attention from the position predicting answer digit ``k`` to each operand digit, per
    layer and head: columns ``layer, head, answer_digit, operand ("a" or "b"), operand_digit,
    weight``. Operand digits are least significant first, as the model reads them."""
    d1, d2 = _one_shape(data)
    tokens, start = answer_inputs(data, fmt)
    pattern = attention_patterns(model, tokens, batch_size=batch_size)  # [n, layer, head, query, key]
    mean = pattern.mean(0)  # [layer, head, query, key]
    a_pos, b_pos = list(range(d1)), list(range(d1 + 1, d1 + 1 + d2))  # a0..  *  b0..  SEP
    rows = []
    n_layers, n_heads = mean.shape[:2]
    for layer in range(n_layers):
        for head in range(n_heads):
            for k in range(d1 + d2):
                q = start + k
                for operand, keys in (("a", a_pos), ("b", b_pos)):
                    for i, key in enumerate(keys):
                        rows.append((layer, head, k, operand, i, float(mean[layer, head, q, key])))
    return pd.DataFrame(rows, columns=["layer", "head", "answer_digit", "operand", "operand_digit", "weight"])


__all__ = [
    "ANSWER_FORMATS", "answer_attention", "answer_inputs", "answer_targets", "probe_answer_positions",
]  # fmt: skip
