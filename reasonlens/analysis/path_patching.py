"""Path patching: a sender's output from another run, fed to one receiver's input only.

A *sender* is a sublayer's output at one position: a layer's attention output (``"attn"``), one
head's output (``"head"``, its slice of ``hook_z``) or an MLP's output (``"mlp"``). A *receiver* is
one input of a later component: the query, key or value side of a layer's attention (``"q"``,
``"k"``, ``"v"``, optionally of one head), its whole attention input (``"attn"``: all three), an
MLP's input (``"mlp"``), or the unembedding (``"logits"``). Everything else stays at the clean run.

The patched quantity is defined as the residual stream the receiver reads, recomputed with the
sender's output swapped. The model runs on a doubled batch: rows ``[:n]`` are the clean run that
every non-receiver reads, rows ``[n:]`` a second stream that gets the same sublayer outputs (copied
at every ``hook_attn_out``/``hook_mlp_out``) except the sender's, which is the source run's. A
receiver takes its input from the second stream (``hook_q``/``hook_k``/``hook_v`` rows copied for a
side, the whole sublayer's output for ``"attn"``/``"mlp"``, the second stream's logits for
``"logits"``). Because the stream is recomputed through the model's own blocks, this holds for
every norm placement: pre-LN and no-norm add the sender's difference to what the receiver reads;
post-LN passes the swapped output through each LayerNorm on the way, so the receiver reads the
post-LN residual stream that its layer would read had only the sender changed.

Two consequences the tests check: the source equal to the clean run changes nothing, and a sender
patched into every receiver downstream of it at once equals ordinary activation patching of that
sender (the downstream components then see everything the patched run would show them). A receiver
before its sender reads a second stream identical to the clean one, so it has no effect.

Metric: ``LD = logit[clean answer] - logit[corrupt answer]`` at ``readout``, averaged over examples.
``effect = LD_patched - LD_clean`` (negative: the path carries what the clean answer needs) and
``score = (LD_patched - LD_corrupt) / (LD_clean - LD_corrupt)`` as in
:func:`~reasonlens.analysis.activation_patching` with ``direction="noise"`` (NaN when the two runs
give the same LD).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from reasonlens.analysis.patching import check_counterfactual, logit_diff
from reasonlens.models.modes import eval_mode

SENDER_KINDS = ("attn", "head", "mlp")
RECEIVER_INPUTS = ("q", "k", "v", "attn", "mlp", "logits")
ALL_DOWNSTREAM = "all downstream"  # the receiver label of the rows that patch every downstream input
PATH_PATCHING_COLUMNS = [
    "sender", "sender_kind", "sender_layer", "sender_head", "receiver", "receiver_input", "receiver_layer",
    "receiver_head", "position", "patched_logit_diff", "effect", "score", "clean_logit_diff",
    "corrupt_logit_diff", "n_examples",
]  # fmt: skip


class Sender(NamedTuple):
    """A sublayer's output: ``kind`` "attn" or "mlp" of ``layer``, or "head" ``head`` of ``layer``."""

    kind: str
    layer: int
    head: int | None = None

    @property
    def label(self) -> str:
        return f"L{self.layer} H{self.head}" if self.kind == "head" else f"L{self.layer} {self.kind}"


class Receiver(NamedTuple):
    """One input: ``input`` "q", "k", "v" (one ``head``, or all heads), "attn" or "mlp" of
    ``layer``, or "logits" (``layer`` None)."""

    input: str
    layer: int | None = None
    head: int | None = None

    @property
    def label(self) -> str:
        if self.input in ("logits", ALL_DOWNSTREAM):
            return self.input
        head = f" H{self.head}" if self.head is not None else ""
        return f"L{self.layer}{head} {self.input}"


def check_sender(model: torch.nn.Module, sender: Sender | tuple) -> Sender:
    cfg = model.cfg
    if not isinstance(sender, tuple) or not 2 <= len(sender) <= 3:
        raise ValueError(f"a sender is (kind, layer) or ('head', layer, head); got {sender!r}")
    s = Sender(*sender)
    if s.kind not in SENDER_KINDS:
        raise ValueError(f"sender {tuple(s)!r}: kind must be one of {SENDER_KINDS}")
    if isinstance(s.layer, bool) or not isinstance(s.layer, int) or not 0 <= s.layer < cfg.n_layers:
        raise ValueError(f"sender {tuple(s)!r}: layer {s.layer!r} is outside 0..{cfg.n_layers - 1}")
    if s.kind == "mlp" and cfg.attn_only:
        raise ValueError(f"sender {tuple(s)!r}: the model is attention-only (no MLP)")
    if s.kind == "head":
        if isinstance(s.head, bool) or not isinstance(s.head, int) or not 0 <= s.head < cfg.n_heads:
            raise ValueError(f"sender {tuple(s)!r}: head {s.head!r} is outside 0..{cfg.n_heads - 1}")
        if cfg.noise != "none":
            raise ValueError(
                f"sender {tuple(s)!r}: with attention noise ({cfg.noise!r}) hook_z holds only the W part "
                "of the head; send the whole attention output ('attn') instead"
            )
    elif s.head is not None:
        raise ValueError(f"sender {tuple(s)!r}: only a 'head' sender names a head")
    return s


def check_receiver(model: torch.nn.Module, receiver: Receiver | tuple) -> Receiver:
    cfg = model.cfg
    if isinstance(receiver, str):
        receiver = (receiver,)
    if not isinstance(receiver, tuple) or not 1 <= len(receiver) <= 3:
        raise ValueError(f"a receiver is (input, layer[, head]) or ('logits',); got {receiver!r}")
    r = Receiver(*receiver)
    if r.input not in RECEIVER_INPUTS:
        raise ValueError(f"receiver {tuple(r)!r}: input must be one of {RECEIVER_INPUTS}")
    if r.input == "logits":
        if r.layer is not None or r.head is not None:
            raise ValueError(f"receiver {tuple(r)!r}: the logits receiver takes no layer or head")
        return r
    if isinstance(r.layer, bool) or not isinstance(r.layer, int) or not 0 <= r.layer < cfg.n_layers:
        raise ValueError(f"receiver {tuple(r)!r}: layer {r.layer!r} is outside 0..{cfg.n_layers - 1}")
    if r.input == "mlp" and cfg.attn_only:
        raise ValueError(f"receiver {tuple(r)!r}: the model is attention-only (no MLP)")
    if r.head is not None:
        if r.input not in ("q", "k", "v"):
            raise ValueError(f"receiver {tuple(r)!r}: only a q, k or v receiver names a head")
        if isinstance(r.head, bool) or not isinstance(r.head, int) or not 0 <= r.head < cfg.n_heads:
            raise ValueError(f"receiver {tuple(r)!r}: head {r.head!r} is outside 0..{cfg.n_heads - 1}")
    if r.input in ("q", "k", "v") and cfg.noise != "none":
        raise ValueError(
            f"receiver {tuple(r)!r}: with attention noise ({cfg.noise!r}) hook_{r.input} holds only the "
            "W part of the head; patch the whole attention input ('attn') instead"
        )
    return r


def _order(kind: str) -> int:
    return {"q": 0, "k": 0, "v": 0, "attn": 0, "head": 0, "mlp": 1}[kind]


def is_downstream(sender: Sender, receiver: Receiver) -> bool:
    """True when ``receiver`` reads the residual stream after ``sender`` writes to it."""
    if receiver.input == "logits":
        return True
    return (receiver.layer, _order(receiver.input)) > (sender.layer, _order(sender.kind))


def downstream_receivers(model: torch.nn.Module, sender: Sender) -> list[Receiver]:
    """Every sublayer input after ``sender`` (whole attention inputs and MLP inputs) and the logits:
    patched together, they give ordinary activation patching of the sender."""
    inputs = ("attn",) if model.cfg.attn_only else ("attn", "mlp")
    out = [Receiver(i, layer) for layer in range(model.cfg.n_layers) for i in inputs]
    return [r for r in out if is_downstream(sender, r)] + [Receiver("logits")]


def default_senders(model: torch.nn.Module) -> list[Sender]:
    """Every layer's attention output (each head too when there are several and the model has no
    attention noise) and MLP output."""
    cfg = model.cfg
    out = []
    for layer in range(cfg.n_layers):
        out.append(Sender("attn", layer))
        if cfg.n_heads > 1 and cfg.noise == "none":
            out += [Sender("head", layer, h) for h in range(cfg.n_heads)]
        if not cfg.attn_only:
            out.append(Sender("mlp", layer))
    return out


def default_receivers(model: torch.nn.Module, sender: Sender) -> list[Receiver]:
    """The query, key and value side of every later attention layer, every later MLP input, and
    the logits."""
    cfg = model.cfg
    out = []
    for layer in range(cfg.n_layers):
        out += [Receiver(side, layer) for side in ("q", "k", "v")]
        if not cfg.attn_only:
            out.append(Receiver("mlp", layer))
    return [r for r in out if is_downstream(sender, r)] + [Receiver("logits")]


def _sender_hook(sender: Sender) -> str:
    if sender.kind == "head":
        return f"blocks.{sender.layer}.attn.hook_z"
    return f"blocks.{sender.layer}.hook_{sender.kind}_out"


def _hooks(
    model: torch.nn.Module,
    n: int,
    sender: Sender,
    source: Tensor,
    position: int,
    receivers: Sequence[Receiver],
) -> list[tuple[str, Callable]]:
    """Forward hooks for the doubled batch (module docstring); ``source`` is the source run's
    activation at the sender's hook."""
    hooks: list[tuple[str, Callable]] = []
    wanted = {(r.input, r.layer) for r in receivers}

    def sublayer(kind: str, layer: int) -> Callable:
        is_sender = sender.kind == kind and sender.layer == layer
        is_receiver = (kind, layer) in wanted

        def fn(out: Tensor, hook: object) -> Tensor:
            out = out.clone()
            if sender.kind == "head" and kind == "attn" and sender.layer == layer:
                pass  # the second stream's output already holds the patched head (hook_z)
            elif is_sender:
                out[n:] = out[:n]
                out[n:, position] = source[:, position].to(out.dtype)
            elif is_receiver:
                out[:n] = out[n:]  # the clean run reads the second stream here ...
            else:
                out[n:] = out[:n]  # ... and the second stream gets the clean run's outputs
            return out

        return fn

    for layer in range(model.cfg.n_layers):
        if sender.kind == "head" and sender.layer == layer:

            def z_fn(z: Tensor, hook: object) -> Tensor:
                z = z.clone()
                z[n:] = z[:n]
                z[n:, position, sender.head] = source[:, position, sender.head].to(z.dtype)
                return z

            hooks.append((_sender_hook(sender), z_fn))
        for side in ("q", "k", "v"):
            for r in receivers:
                if r.input == side and r.layer == layer:
                    heads = slice(None) if r.head is None else r.head

                    def side_fn(t: Tensor, hook: object, heads: int | slice = heads) -> Tensor:
                        t = t.clone()
                        t[:n, :, heads] = t[n:, :, heads]
                        return t

                    hooks.append((f"blocks.{layer}.attn.hook_{side}", side_fn))
        hooks.append((f"blocks.{layer}.hook_attn_out", sublayer("attn", layer)))
        if not model.cfg.attn_only:
            hooks.append((f"blocks.{layer}.hook_mlp_out", sublayer("mlp", layer)))
    return hooks


def path_patch_logits(
    model: torch.nn.Module,
    clean_tokens: Int[Tensor, "n pos"],
    sender: Sender,
    source: Float[Tensor, "n pos ..."],
    position: int,
    receivers: Sequence[Receiver],
) -> Float[Tensor, "n pos d_vocab_out"]:
    """The clean run's logits with ``sender``'s output at ``position`` taken from ``source`` (its
    activation at the sender's hook in the source run) and fed to ``receivers`` only (together)."""
    n = clean_tokens.shape[0]
    hooks = _hooks(model, n, sender, source, position, receivers)
    logits = model.run_with_hooks(torch.cat([clean_tokens, clean_tokens]), fwd_hooks=hooks)
    return logits[n:] if Receiver("logits") in receivers else logits[:n]


@torch.no_grad()
def path_patching(
    model: torch.nn.Module,
    clean_tokens: Int[Tensor, "n pos"],
    corrupt_tokens: Int[Tensor, "n pos"],
    clean_answers: Int[Tensor, " n"],
    corrupt_answers: Int[Tensor, " n"],
    senders: Iterable[Sender | tuple] | None = None,
    receivers: Iterable[Receiver | tuple] | None = None,
    positions: Sequence[int] | None = None,
    readout: int = -1,
    total: bool = True,
    progress: bool = False,
    skip_unchanged: bool = True,
) -> pd.DataFrame:
    """Path-patch each sender (default :func:`default_senders`) from the corrupted run into each
    receiver downstream of it (default :func:`default_receivers`; given receivers before a sender
    are measured too, and show no effect), one at a time, at each position (default all). With
    ``total``, one more row per sender and position patches every downstream receiver at once
    (``receiver`` "all downstream": ordinary activation patching of the sender). One tidy row per
    (sender, receiver, position); the metric is described in the module docstring.

    With ``skip_unchanged``, a (sender, position) whose corrupted output equals the clean one in
    every example (e.g. before the first corrupted token) is not run: every path from it then reads
    the clean run, so its rows get the clean logit difference and effect 0."""
    check_counterfactual(model, clean_tokens, corrupt_tokens, clean_answers, corrupt_answers, readout)
    n, n_pos = clean_tokens.shape
    senders = default_senders(model) if senders is None else [check_sender(model, s) for s in senders]
    if not senders:
        raise ValueError("no senders given")
    given = None if receivers is None else [check_receiver(model, r) for r in receivers]
    if given is not None and not given:
        raise ValueError("no receivers given")
    positions = list(range(n_pos)) if positions is None else list(positions)
    for p in positions:
        if isinstance(p, bool) or not isinstance(p, int) or not -n_pos <= p < n_pos:
            raise ValueError(f"position {p!r} is outside the {n_pos} input positions")
    positions = [p % n_pos for p in positions]

    device = next(model.parameters()).device
    clean_tokens, corrupt_tokens = clean_tokens.to(device), corrupt_tokens.to(device)
    plan = []
    for s in senders:
        rs = [(r, [r]) for r in (default_receivers(model, s) if given is None else given)]
        if total:
            rs.append((Receiver(ALL_DOWNSTREAM), downstream_receivers(model, s)))
        plan += [(s, label, group, p) for label, group in rs for p in positions]
    names = sorted({_sender_hook(s) for s in senders})
    rows = []
    with eval_mode(model):
        clean_logits, clean_cache = model.run_with_cache(clean_tokens, names_filter=names)
        corrupt_logits, cache = model.run_with_cache(corrupt_tokens, names_filter=names)
        ld_clean = logit_diff(clean_logits, clean_answers, corrupt_answers, readout).mean().item()
        ld_corrupt = logit_diff(corrupt_logits, clean_answers, corrupt_answers, readout).mean().item()
        span = ld_clean - ld_corrupt
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(plan), desc="path patching", leave=False)
        for s, r, group, p in plan:
            hook = _sender_hook(s)
            if skip_unchanged and torch.equal(cache[hook][:, p], clean_cache[hook][:, p]):
                ld = ld_clean
            else:
                logits = path_patch_logits(model, clean_tokens, s, cache[hook], p, group)
                ld = logit_diff(logits, clean_answers, corrupt_answers, readout).mean().item()
            rows.append([
                s.label, s.kind, s.layer, s.head, r.label, "all" if r.input == ALL_DOWNSTREAM else r.input,
                r.layer, r.head, p, ld, ld - ld_clean,
                (ld - ld_corrupt) / span if abs(span) > 1e-9 else float("nan"), ld_clean, ld_corrupt, n,
            ])  # fmt: skip
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
    df = pd.DataFrame(rows, columns=PATH_PATCHING_COLUMNS)
    for col in ("sender_head", "receiver_layer", "receiver_head"):
        df[col] = df[col].astype("Int64")
    return df
