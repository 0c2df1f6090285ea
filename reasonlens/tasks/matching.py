"""Chain "matching" tasks of Wang et al. (2024), as their authors' teaching code defines them.

A chain of distinct tokens ``x1 -> x2 -> ... -> x(n+1)`` is written as its ``n`` parent->child
pairs in shuffled order, followed by a query token; the answer is the node ``k`` hops after the
query. Solving it takes ``k`` successive matches of "which pair has my current node as parent".

Vocabulary: 0 is padding, in-distribution tokens are ``1..n_tokens`` (100 by default), OOD tokens
``n_tokens+1..2*n_tokens``. The train/test split is by pair residue: a pair's
``(child - parent) mod 5`` lies in {0, 1, 4} for train and {2, 3} for test, so no test pair ever
occurs in training. A child is drawn as ``randint(lo, hi) // 5 * 5 + (parent + r) % 5`` with ``r``
from the split's residue set, rejecting repeats and out-of-range values. The OOD split draws the
chain from the OOD range with every residue allowed, then shifts the answer and its parent down by
``n_tokens`` wherever they occur, so the answer is an in-vocabulary token.

Kinds, and the ``seq_len`` (model input length, answer excluded) each accepts:

- ``single_chain`` (Type 1): ``n`` pairs + query; ``seq_len = 2n + 1`` (odd, >= 3).
  The teaching run uses ``seq_len=13`` (6 pairs) and ``k=2``.
- ``double_chain`` (Type 2): two disjoint chains of ``m`` pairs each, plus one distractor pair per
  chain whose child is an interior node of that chain, all ``2m + 2`` pairs shuffled, then a query;
  the answer is always the *end* of the query's chain, ``k`` hops away (the query may be the
  distractor's parent). ``seq_len = 4m + 5`` with ``m >= 2`` (13, 17, 21, ...); ``k <= m``.
- ``with_steps`` (Type 3): a single chain of ``n`` pairs, the query, then a step token telling
  ``k``; ``seq_len = 2n + 2`` (even, >= 4). Step tokens follow the node vocabulary:
  the token for ``k`` is ``2 * n_tokens + k``, so the vocabulary grows by ``n``.

``steps`` may be an int or a sequence of ints, in which case every example draws its ``k``
uniformly from the sequence (the authors train Types 2 and 3 on such mixtures).

Every example carries its ground truth: the chain(s), the hop path from query to answer, the
position of the pair used at each hop, and (Type 2) the distractor pairs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from jaxtyping import Bool, Int
from torch import Tensor

from reasonlens.tasks.batch import Batch

Split = Literal["train", "test", "ood"]
Kind = Literal["single_chain", "double_chain", "with_steps"]
Order = Literal["random", "chain", "reverse", "path_chain", "path_reverse"]

SPLITS: tuple[str, ...] = ("train", "test", "ood")
KINDS: tuple[str, ...] = ("single_chain", "double_chain", "with_steps")
ORDERS: tuple[str, ...] = ("random", "chain", "reverse", "path_chain", "path_reverse")
PAD = 0
DEFAULT_N_TOKENS = 100
TRAIN_RESIDUES = (0, 1, 4)
TEST_RESIDUES = (2, 3)
OOD_RESIDUES = (0, 1, 2, 3, 4)
_RESIDUES = {"train": TRAIN_RESIDUES, "test": TEST_RESIDUES, "ood": OOD_RESIDUES}
_MAX_REJECTION_ROUNDS = 10_000


@dataclass(frozen=True)
class MatchingDataset:
    """A batch of matching examples and their ground truth (all tensors share the first axis).

    ``tokens[:, :-1]`` is what the model reads; ``tokens[:, -1]`` is the answer. Pair ``p`` sits at
    positions ``2p`` (parent) and ``2p + 1`` (child); the query at :attr:`query_pos`.
    """

    tokens: Int[Tensor, "n seq_plus_1"]
    steps: Int[Tensor, " n"]  # k per example
    paths: Int[Tensor, "n max_k_plus_1"]  # query, ..., answer; -1 after k+1 entries
    hop_pairs: Int[Tensor, "n max_k"]  # pair index holding hop j (path[j] -> path[j+1]); -1 pad
    chains: Int[Tensor, ...]  # [n, n_pairs + 1]; double_chain: [n, 2, m + 1] (chains A, B)
    distractors: Int[Tensor, "n 2 2"] | None  # double_chain: (parent, child) per chain, else None
    query_chain: Int[Tensor, " n"] | None  # double_chain: which chain (0/1) the query belongs to
    kind: str
    split: str
    seq_len: int
    n_tokens: int

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, idx: int | slice | Tensor | np.ndarray | list[int]) -> MatchingDataset:
        """A sub-dataset (always keeps the example axis)."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        fields = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            fields[f.name] = value[idx] if isinstance(value, Tensor) else value
        return MatchingDataset(**fields)

    @property
    def inputs(self) -> Int[Tensor, "n seq_len"]:
        return self.tokens[:, :-1]

    @property
    def answers(self) -> Int[Tensor, " n"]:
        return self.tokens[:, -1]

    @property
    def n_pairs(self) -> int:
        return pairs_for(self.kind, self.seq_len)

    @property
    def query_pos(self) -> int:
        return 2 * self.n_pairs

    @property
    def answer_pos(self) -> int:
        """Input position whose next-token prediction is the answer (the last input position)."""
        return self.seq_len - 1

    @property
    def d_vocab(self) -> int:
        return vocab_size(self.kind, self.seq_len, self.n_tokens)

    @property
    def pairs(self) -> Int[Tensor, "n n_pairs 2"]:
        return self.tokens[:, : 2 * self.n_pairs].reshape(len(self), self.n_pairs, 2)

    @property
    def loss_mask(self) -> Bool[Tensor, "n seq_len"]:
        mask = torch.zeros(len(self), self.seq_len, dtype=torch.bool)
        mask[:, -1] = True
        return mask

    def batch(self) -> Batch:
        """Next-token (inputs, targets, mask) with the loss on the answer only."""
        return Batch(inputs=self.tokens[:, :-1], targets=self.tokens[:, 1:], mask=self.loss_mask)

    def parents_at(self) -> Int[Tensor, "n seq_len"]:
        """For each input position, the parent of the token there (-1 where none is in context).

        A child position's parent is the token just before it; a parent position's or the
        query's parent is found by matching against the children in context.
        """
        n, T = len(self), self.seq_len
        pairs = self.pairs
        out = torch.full((n, T), -1, dtype=torch.long)
        children, parents = pairs[:, :, 1], pairs[:, :, 0]
        toks = self.inputs
        for pos in range(T):
            hit = children == toks[:, pos : pos + 1]  # [n, n_pairs]
            has = hit.any(1)
            # With a distractor, a node can have two parents; take the first pair in sequence.
            first = hit.float().argmax(1)
            out[has, pos] = parents[has, first[has]]
        return out

    def describe(self, i: int) -> str:
        """One example in the teaching code's notation: ``input tokens -> answer``."""
        toks = self.tokens[i].tolist()
        k = int(self.steps[i])
        path = " -> ".join(str(t) for t in self.paths[i, : k + 1].tolist())
        return f"{' '.join(map(str, toks[:-1]))} -> {toks[-1]}   (k={k}: {path})"


def pairs_for(kind: str, seq_len: int) -> int:
    """Number of pairs in an example of this kind and input length (validated)."""
    _check_kind(kind)
    if isinstance(seq_len, bool) or not isinstance(seq_len, int):
        raise ValueError(f"seq_len must be an integer; got {seq_len!r}")
    if kind == "single_chain":
        if seq_len < 3 or seq_len % 2 == 0:
            raise ValueError(f"single_chain needs an odd seq_len >= 3 (2 * pairs + query); got {seq_len}")
        return (seq_len - 1) // 2
    if kind == "with_steps":
        if seq_len < 4 or seq_len % 2 == 1:
            raise ValueError(
                f"with_steps needs an even seq_len >= 4 (2 * pairs + query + step token); got {seq_len}"
            )
        return (seq_len - 2) // 2
    if seq_len < 13 or (seq_len - 5) % 4 != 0:
        raise ValueError(
            f"double_chain needs seq_len = 4m + 5 with m >= 2 pairs per chain (13, 17, 21, ...); "
            f"got {seq_len}"
        )
    return 2 * ((seq_len - 5) // 4) + 2


def vocab_size(kind: str, seq_len: int, n_tokens: int = DEFAULT_N_TOKENS) -> int:
    """``d_vocab`` a model needs for this task: padding + ID + OOD tokens (+ step tokens)."""
    n_pairs = pairs_for(kind, seq_len)
    return 2 * n_tokens + 1 + (n_pairs if kind == "with_steps" else 0)


def step_token(k: int | Tensor, n_tokens: int = DEFAULT_N_TOKENS) -> int | Tensor:
    """The token that tells ``k`` in ``with_steps`` examples."""
    return 2 * n_tokens + k


def max_steps(kind: str, seq_len: int) -> int:
    n_pairs = pairs_for(kind, seq_len)
    return (n_pairs - 2) // 2 if kind == "double_chain" else n_pairs


def generate(
    n: int,
    split: Split = "train",
    steps: int | Sequence[int] = 2,
    seq_len: int = 13,
    kind: Kind = "single_chain",
    seed: int | Sequence[int] = 0,
    n_tokens: int = DEFAULT_N_TOKENS,
    order: Order = "random",
) -> MatchingDataset:
    """Generate ``n`` examples; deterministic given all arguments.

    ``order`` places the pairs: "random" (shuffled, the paper's setting), "chain" (in chain order)
    or "reverse" (reverse chain order). "path_chain" and "path_reverse" shuffle the pairs, then
    reorder only the pairs on the query's hop path within the slots they landed in: in hop order
    (hop 1's pair leftmost) or in reverse hop order (hop k's pair leftmost, so every hop's pair
    comes after the pair of the hop that follows it). Their slots stay random, so unlike "chain"
    and "reverse" the answer's position is not fixed relative to the query's pair. ``seed`` may
    be an int or a sequence of ints (e.g. ``(seed, step)`` for a fresh batch per training step).
    """
    ks = _validate(n, split, steps, seq_len, kind, n_tokens, order)
    seed_seq = [seed] if isinstance(seed, (int, np.integer)) else list(seed)
    rng = np.random.default_rng([*seed_seq, SPLITS.index(split), KINDS.index(kind), n_tokens])
    lo, hi = (1, n_tokens) if split != "ood" else (n_tokens + 1, 2 * n_tokens)
    residues = np.array(_RESIDUES[split])
    n_pairs = pairs_for(kind, seq_len)
    k = rng.choice(np.array(ks), size=n) if len(ks) > 1 else np.full(n, ks[0])
    kmax = int(max(ks))

    if kind == "double_chain":
        parts = _double_chain(rng, n, n_pairs, k, lo, hi, residues)
    else:
        parts = _single_chain(rng, n, n_pairs, k, lo, hi, residues)
    pair_list, chains, paths, hop_chain_pair, distractors, query_chain = parts

    # Place the pairs: pair_list[:, c] is the c-th pair in "chain order"; perm[:, p] is the chain
    # pair written at sequence slot p.
    if order in ("random", "path_chain", "path_reverse"):
        perm = np.argsort(rng.random((n, n_pairs)), axis=1)
        if order != "random":
            perm = _order_path(perm, hop_chain_pair, k, reverse=order == "path_reverse")
    elif order == "chain":
        perm = np.tile(np.arange(n_pairs), (n, 1))
    else:
        perm = np.tile(np.arange(n_pairs)[::-1], (n, 1))
    slot_of = np.argsort(perm, axis=1)  # chain pair index -> sequence slot
    placed = np.take_along_axis(pair_list, perm[:, :, None], axis=1)  # [n, n_pairs, 2]
    hop_pairs = np.where(
        hop_chain_pair >= 0, np.take_along_axis(slot_of, np.maximum(hop_chain_pair, 0), 1), -1
    )

    ar = np.arange(n)
    query = paths[:, 0]
    answer = paths[ar, k]
    extra = [step_token(k, n_tokens)[:, None]] if kind == "with_steps" else []
    tokens = np.concatenate([placed.reshape(n, 2 * n_pairs), query[:, None], *extra, answer[:, None]], 1)

    if split == "ood":
        # The answer and its parent (on the query's path) become in-distribution tokens.
        ans, par = answer[:, None], paths[ar, k - 1][:, None]

        def shift(x: np.ndarray) -> np.ndarray:
            flat = x.reshape(n, -1)
            hit = (flat == ans) | (flat == par)
            return np.where(hit & (flat > 0), flat - n_tokens, flat).reshape(x.shape)

        body = shift(tokens[:, : 2 * n_pairs + 1])
        tokens = np.concatenate([body, tokens[:, 2 * n_pairs + 1 : -1], (answer - n_tokens)[:, None]], 1)
        chains, paths = shift(chains), shift(paths)
        distractors = shift(distractors) if distractors is not None else None

    assert tokens.shape == (n, seq_len + 1), tokens.shape
    paths = np.where(np.arange(kmax + 1)[None, :] <= k[:, None], paths[:, : kmax + 1], -1)
    as_t = lambda x: None if x is None else torch.from_numpy(np.ascontiguousarray(x)).long()  # noqa: E731
    return MatchingDataset(
        tokens=as_t(tokens),
        steps=as_t(k),
        paths=as_t(paths),
        hop_pairs=as_t(hop_pairs[:, :kmax]),
        chains=as_t(chains),
        distractors=as_t(distractors),
        query_chain=as_t(query_chain),
        kind=kind,
        split=split,
        seq_len=seq_len,
        n_tokens=n_tokens,
    )


# -- generation internals -----------------------------------------------------------------------


def _single_chain(rng, n, n_pairs, k, lo, hi, residues):  # noqa: ANN001, ANN202
    chains = _draw_chain(rng, n, n_pairs + 1, lo, hi, residues, used=np.zeros((n, 0), np.int64))
    pair_list = np.stack([chains[:, :-1], chains[:, 1:]], axis=2)  # [n, n_pairs, 2]
    kmax = int(k.max())
    start = (rng.random(n) * (n_pairs + 1 - k)).astype(np.int64)  # query index in the chain
    idx = start[:, None] + np.arange(kmax + 1)[None, :]
    paths = np.take_along_axis(chains, np.minimum(idx, n_pairs), 1)
    hop = start[:, None] + np.arange(kmax)[None, :]
    hop_chain_pair = np.where(np.arange(kmax)[None, :] < k[:, None], hop, -1)
    return pair_list, chains, paths, hop_chain_pair, None, None


def _double_chain(rng, n, n_pairs, k, lo, hi, residues):  # noqa: ANN001, ANN202
    m = (n_pairs - 2) // 2  # pairs per chain
    ar = np.arange(n)
    a = _draw_chain(rng, n, m + 1, lo, hi, residues, used=np.zeros((n, 0), np.int64))
    b = _draw_chain(rng, n, m + 1, lo, hi, residues, used=a)
    chains = np.stack([a, b], axis=1)  # [n, 2, m+1]
    used = chains.reshape(n, -1)
    # One distractor per chain: a fresh parent d pointing at an interior node (index 1..m-1).
    targets = 1 + (rng.random((n, 2)) * (m - 1)).astype(np.int64)
    dist = np.zeros((n, 2, 2), np.int64)
    for c in range(2):
        child = chains[ar, c, targets[:, c]]
        d = _draw_related(rng, child, lo, hi, residues, used, direction=-1)
        used = np.concatenate([used, d[:, None]], 1)
        dist[:, c, 0], dist[:, c, 1] = d, child
    # Chain pairs in order: chain A's m pairs, chain B's m pairs, distractor A, distractor B.
    pair_list = np.concatenate(
        [np.stack([a[:, :-1], a[:, 1:]], 2), np.stack([b[:, :-1], b[:, 1:]], 2), dist], 1
    )
    # Query: a node at distance k from the end of a randomly chosen chain; the distractor's parent
    # qualifies when its distance (m - target + 1) equals k.
    qc = (rng.random(n) < 0.5).astype(np.int64)
    dist_target = targets[ar, qc]
    use_distractor = (m - dist_target + 1 == k) & (rng.random(n) < 0.5)
    kmax = int(k.max())
    j = np.arange(kmax + 1)[None, :]
    # Path along the chain from index (m - k): chain[qc, m-k+j].
    start = m - k
    on_chain = chains[ar[:, None], qc[:, None], np.minimum(start[:, None] + j, m)]
    # From the distractor: d, chain[target], chain[target+1], ...
    from_d = np.concatenate(
        [
            dist[ar, qc, 0][:, None],
            chains[ar[:, None], qc[:, None], np.minimum(dist_target[:, None] + j[:, :-1], m)],
        ],
        1,
    )
    paths = np.where(use_distractor[:, None], from_d, on_chain)
    # Chain-order pair index of hop j: chain qc's pair (start + j), or for the distractor route,
    # hop 0 is the distractor pair (2m + qc) and hop j >= 1 is chain pair (target + j - 1).
    hop_on_chain = qc[:, None] * m + start[:, None] + j[:, :-1]
    hop_from_d = np.where(
        j[:, :-1] == 0, 2 * m + qc[:, None], qc[:, None] * m + dist_target[:, None] + j[:, :-1] - 1
    )
    hop_chain_pair = np.where(use_distractor[:, None], hop_from_d, hop_on_chain)
    hop_chain_pair = np.where(j[:, :-1] < k[:, None], hop_chain_pair, -1)
    return pair_list, chains, paths, hop_chain_pair, dist, qc


def _order_path(perm: np.ndarray, hop_chain_pair: np.ndarray, k: np.ndarray, reverse: bool) -> np.ndarray:
    """Reorder the hop-path pairs of each example within the slots they occupy in ``perm``.

    ``perm[i, slot]`` is the chain pair at that slot; ``hop_chain_pair[i, j]`` the chain pair of hop
    ``j`` (-1 past ``k``). After this, the path pairs sit in the same set of slots, in hop order
    (or reverse hop order); every other pair keeps its slot.
    """
    n, kmax = hop_chain_pair.shape
    valid = hop_chain_pair >= 0
    slot_of = np.argsort(perm, axis=1)
    slots = np.where(valid, np.take_along_axis(slot_of, np.maximum(hop_chain_pair, 0), 1), perm.shape[1])
    ordered = np.sort(slots, axis=1)  # the path's slots, ascending, padding last
    j = np.arange(kmax)[None, :]
    rank = np.where(valid, (k[:, None] - 1 - j) if reverse else j, 0)
    new_slot = np.take_along_axis(ordered, rank, 1)
    out = perm.copy()
    rows = np.broadcast_to(np.arange(n)[:, None], (n, kmax))
    out[rows[valid], new_slot[valid]] = hop_chain_pair[valid]
    return out


def _draw_chain(rng, n, length, lo, hi, residues, used):  # noqa: ANN001, ANN202
    """[n, length] chains of distinct tokens in [lo, hi], each step's residue from ``residues``."""
    chain = np.zeros((n, length), np.int64)
    first = rng.integers(lo, hi + 1, size=n)
    todo = np.arange(n)
    for _ in range(_MAX_REJECTION_ROUNDS):  # the first node must avoid ``used`` too
        bad = (used[todo] == first[todo, None]).any(1)
        if not bad.any():
            break
        todo = todo[bad]
        first[todo] = rng.integers(lo, hi + 1, size=todo.size)
    chain[:, 0] = first
    for j in range(1, length):
        chain[:, j] = _draw_related(
            rng, chain[:, j - 1], lo, hi, residues, np.concatenate([used, chain[:, :j]], 1), 1
        )
    return chain


def _draw_related(rng, anchor, lo, hi, residues, used, direction):  # noqa: ANN001, ANN202
    """A token x per row with ``(x - anchor) * direction mod 5`` in ``residues``, not in ``used``.

    ``direction=1`` draws a child of ``anchor``, ``-1`` a parent. Rejection sampling, vectorised.
    """
    n = anchor.shape[0]
    out = np.zeros(n, np.int64)
    todo = np.arange(n)
    for _ in range(_MAX_REJECTION_ROUNDS):
        r = rng.choice(residues, size=todo.size)
        cand = rng.integers(lo, hi + 1, size=todo.size) // 5 * 5 + (anchor[todo] + direction * r) % 5
        ok = (cand >= lo) & (cand <= hi) & ~(used[todo] == cand[:, None]).any(1)
        out[todo[ok]] = cand[ok]
        todo = todo[~ok]
        if todo.size == 0:
            return out
    raise RuntimeError(
        "matching.generate: could not draw distinct tokens; the chain is too long for the "
        f"token range [{lo}, {hi}] (raise n_tokens)"
    )


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")


def _validate(n, split, steps, seq_len, kind, n_tokens, order) -> list[int]:  # noqa: ANN001
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}; got {order!r}")
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 10:
        raise ValueError(f"n_tokens must be an integer >= 10; got {n_tokens!r}")
    n_pairs = pairs_for(kind, seq_len)
    ks = [steps] if isinstance(steps, (int, np.integer)) else list(steps)
    if not ks:
        raise ValueError("steps must be an int or a non-empty sequence of ints; got an empty sequence")
    kmax = max_steps(kind, seq_len)
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= kmax:
            what = "pairs per chain" if kind == "double_chain" else "pairs"
            raise ValueError(
                f"steps={k!r} is impossible for kind={kind!r} with seq_len={seq_len}: need "
                f"1 <= k <= {kmax} ({what}); lengthen seq_len or lower steps"
            )
    # Distinct tokens per example must fit comfortably in the residue classes the split allows,
    # so rejection sampling never gets stuck.
    nodes = n_pairs + 2 if kind == "double_chain" else n_pairs + 1
    capacity = n_tokens * len(_RESIDUES[split]) // 5 // 2
    if nodes > capacity:
        raise ValueError(
            f"a {kind} example with seq_len={seq_len} needs {nodes} distinct tokens, more than the "
            f"{split} split can draw from n_tokens={n_tokens} (at most {capacity}); raise n_tokens"
        )
    return [int(k) for k in ks]


def batch_maker(
    split: Split = "train",
    steps: int | Sequence[int] = 2,
    seq_len: int = 13,
    kind: Kind = "single_chain",
    n_tokens: int = DEFAULT_N_TOKENS,
    order: Order = "random",
):  # noqa: ANN201 - Callable[[seed, n], Batch]
    """A ``make(seed, n) -> Batch`` for :class:`reasonlens.training.StreamSource` (fresh examples
    every step). Arguments are validated now, before any training starts."""
    _validate(1, split, steps, seq_len, kind, n_tokens, order)

    def make(seed: Sequence[int], n: int) -> Batch:
        return generate(n, split, steps, seq_len, kind, seed, n_tokens, order).batch()

    return make
