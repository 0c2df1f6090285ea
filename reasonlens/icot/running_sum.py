"""The auxiliary running-sum loss of Bai et al. (2025): standard training on ``input SEP #### answer
END`` plus an MSE loss in which linear heads (no bias) read the running sum

    c_k = sum_{i + j = k} a_i b_j + c_{k-1} // 10        (c_{-1} = 0)

from one layer's attention-head outputs (``blocks.{layer}.attn.hook_z``) at the position that
predicts answer digit ``k``. ``c_k mod 10`` is answer digit ``k``, so the heads ask the model to
carry the whole column sum, carries included, where it writes each digit: the long-range
dependency that plain training does not find.

Bai et al. do not publish the loss weight or the target scale; here the targets are divided by
:data:`TARGET_SCALE` (so that they are of order one) and the weight is an option.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from reasonlens.models import Transformer
from reasonlens.tasks.batch import Batch
from reasonlens.tasks.multiplication import MultiplicationData

TARGET_SCALE = 100.0


def running_sums(a: Int[Tensor, " n"], b: Int[Tensor, " n"], d1: int, d2: int) -> Int[Tensor, "n n_answer"]:
    """``c_k`` for ``k = 0 .. d1 + d2 - 1`` of the products ``a x b`` (digits least significant
    first; ``c_k mod 10`` is digit ``k`` of ``a * b``)."""
    n_ans = d1 + d2
    ad = torch.stack([(a // 10**i) % 10 for i in range(d1)], dim=1)  # [n, d1]
    bd = torch.stack([(b // 10**j) % 10 for j in range(d2)], dim=1)  # [n, d2]
    pair = ad[:, :, None] * bd[:, None, :]  # [n, d1, d2]
    out = torch.zeros(len(a), n_ans, dtype=torch.long)
    carry = torch.zeros(len(a), dtype=torch.long)
    for k in range(n_ans):
        col = torch.zeros(len(a), dtype=torch.long)
        for i in range(max(0, k - d2 + 1), min(d1, k + 1)):
            col += pair[:, i, k - i]
        out[:, k] = col + carry
        carry = out[:, k] // 10
    return out


def add_running_sums(batch: Batch, data: MultiplicationData) -> Batch:
    """The no-CoT ``batch`` of ``data`` with ``extra["running_sum"]`` ``[n, n_answer]`` and
    ``extra["answer_start"]`` (the input position predicting answer digit 0). One operand size per
    dataset."""
    shapes = data.shapes
    if len(shapes) != 1:
        raise ValueError(f"the running-sum loss needs one operand size per dataset; got {shapes}")
    d1, d2 = shapes[0]
    sums = running_sums(data.a, data.b, d1, d2)
    extra = {**batch.extra, "running_sum": sums, "answer_start": data.sep1 + 1}
    return Batch(batch.inputs, batch.targets, batch.mask, extra)


class RunningSumHeads(nn.Module):
    """A transformer plus one bias-free linear head per attention head of ``layer`` (default: the
    last), each predicting ``c_k / TARGET_SCALE`` from that head's output ``z``.

    ``forward`` returns the transformer's logits, so decoding and evaluation treat it as the plain
    model; :meth:`save` writes the plain transformer (the heads are training scaffolding; they are
    in the training state for resume).
    """

    def __init__(self, model: Transformer, layer: int | None = None, weight: float = 1.0):
        super().__init__()
        cfg = model.cfg
        layer = cfg.n_layers - 1 if layer is None else layer
        if not 0 <= layer < cfg.n_layers:
            raise ValueError(f"layer must be in 0..{cfg.n_layers - 1}; got {layer}")
        if not weight >= 0 or weight == float("inf"):
            raise ValueError(f"the running-sum loss weight must be a finite number >= 0; got {weight!r}")
        self.model = model
        self.layer = layer
        self.weight = float(weight)
        gen = torch.Generator().manual_seed(cfg.seed + 7919)
        w = torch.randn(cfg.n_heads, cfg.d_head, generator=gen) / cfg.d_head**0.5
        self.W_sum = nn.Parameter(w)  # [n_heads, d_head]

    @property
    def cfg(self):  # noqa: ANN201 - the transformer's ModelConfig
        return self.model.cfg

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.attn.hook_z"

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
        return self.model(tokens)

    def forward_with_sums(
        self, tokens: Int[Tensor, "batch pos"]
    ) -> tuple[Float[Tensor, "batch pos d_vocab"], Float[Tensor, "batch pos n_heads"]]:
        """Logits and every head's running-sum prediction (scaled by ``TARGET_SCALE``) at every
        position."""
        seen: dict[str, Tensor] = {}

        def keep(z: Tensor, hook: Any) -> Tensor:
            seen["z"] = z
            return z

        with self.model.hooks(fwd_hooks=[(self.hook_name, keep)]):
            logits = self.model(tokens)
        pred = torch.einsum("bphd,hd->bph", seen["z"], self.W_sum.to(seen["z"].dtype))
        return logits, pred

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        """``lm`` (masked cross-entropy), ``sum_mse`` (over heads and answer digits, scaled
        targets) and ``loss = lm + weight * sum_mse``."""
        if "running_sum" not in batch.extra:
            raise ValueError("the batch has no extra['running_sum']: build it with add_running_sums")
        logits, pred = self.forward_with_sums(batch.inputs)
        lm = F.cross_entropy(logits[batch.mask].float(), batch.targets[batch.mask])
        target = batch.extra["running_sum"].float() / TARGET_SCALE  # [b, n_answer]
        at = _at_answers(pred, batch)  # [b, n_answer, heads]
        mse = (at - target[:, :, None]).pow(2).mean()
        return {"lm": lm, "sum_mse": mse, "loss": lm + self.weight * mse}

    def save(self, path: str | os.PathLike, metadata: dict | None = None) -> Path:
        meta = {**(metadata or {}), "aux_running_sum": {"layer": self.layer, "weight": self.weight}}
        return self.model.save(path, metadata=meta)


def _at_answers(
    pred: Float[Tensor, "batch pos n_heads"], batch: Batch
) -> Float[Tensor, "batch n_answer n_heads"]:
    """Every head's prediction at the positions predicting answer digits ``0 .. n_answer - 1``."""
    n_ans = batch.extra["running_sum"].shape[1]
    pos = batch.extra["answer_start"][:, None] + torch.arange(n_ans, device=pred.device)[None, :]
    return pred.float().gather(1, pos[:, :, None].expand(-1, -1, pred.shape[2]))


def running_sum_loss(module: RunningSumHeads, batch: Batch) -> Float[Tensor, ""]:
    """The trainer's ``loss_fn`` for :class:`RunningSumHeads`."""
    return module.losses(batch)["loss"]


@torch.no_grad()
def evaluate_running_sum(module: RunningSumHeads, batch: Batch, batch_size: int) -> dict[str, float]:
    """The trainer's ``eval_fn``: LM metrics of the plain model plus the heads' MSE and the mean
    absolute error of the best head in units of the running sum."""
    from reasonlens.training import evaluate_lm

    out = evaluate_lm(module.model, batch, batch_size)
    was = module.training
    module.eval()
    device = next(module.parameters()).device
    mse, abs_err, n = 0.0, None, 0
    for i in range(0, len(batch), batch_size):
        b = batch[i : i + batch_size].to(device)
        _, pred = module.forward_with_sums(b.inputs)
        n_ans = b.extra["running_sum"].shape[1]
        at = _at_answers(pred, b) * TARGET_SCALE
        err = (at - b.extra["running_sum"].float()[:, :, None]).abs()  # [b, n_answer, heads]
        mse += float((err / TARGET_SCALE).pow(2).mean()) * len(b)
        s = err.sum(dim=(0, 1))
        abs_err = s if abs_err is None else abs_err + s
        n += len(b) * n_ans
    module.train(was)
    out["sum_mse"] = mse / max(len(batch), 1)
    out["sum_mae_best_head"] = float(abs_err.min() / max(n, 1)) if abs_err is not None else float("nan")
    return out
