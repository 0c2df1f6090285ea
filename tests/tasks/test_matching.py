"""The matching generators, checked against an independent pure-Python reading of the rules."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reasonlens.tasks import matching

RESIDUES = {"train": {0, 1, 4}, "test": {2, 3}}


def follow(pairs, start, k):
    """Walk k hops from ``start`` through parent->child pairs (each parent has one child)."""
    child = {}
    for p, c in pairs:
        assert p not in child, f"{p} has two children"
        child[p] = c
    path = [start]
    for _ in range(k):
        path.append(child[path[-1]])
    return path


def parse(tokens, kind, seq_len, n_tokens=100):
    """Split one example into (pairs, query, k_token or None, answer)."""
    n_pairs = matching.pairs_for(kind, seq_len)
    toks = tokens.tolist()
    pairs = [(toks[2 * i], toks[2 * i + 1]) for i in range(n_pairs)]
    query = toks[2 * n_pairs]
    k_token = toks[2 * n_pairs + 1] if kind == "with_steps" else None
    return pairs, query, k_token, toks[-1]


def check_dataset(ds, n_tokens=100):
    """Every rule of the issue, per example."""
    for i in range(len(ds)):
        k = int(ds.steps[i])
        pairs, query, k_token, answer = parse(ds.tokens[i], ds.kind, ds.seq_len, n_tokens)
        path = follow(pairs, query, k)
        assert path[-1] == answer
        assert ds.paths[i, : k + 1].tolist() == path
        assert (ds.paths[i, k + 1 :] == -1).all()
        for j in range(k):
            assert pairs[int(ds.hop_pairs[i, j])] == (path[j], path[j + 1])
        nodes = [t for pair in pairs for t in pair] + [query]
        assert len(set(nodes)) == len({p for p, _ in pairs} | {c for _, c in pairs})
        assert all(t != matching.PAD for t in nodes)
        if ds.kind == "with_steps":
            assert k_token == 2 * n_tokens + k
        if ds.kind == "double_chain":
            assert answer not in {p for p, _ in pairs}, "the answer must end its chain"
        if ds.split in RESIDUES:
            assert all(1 <= t <= n_tokens for t in nodes)
            assert {(c - p) % 5 for p, c in pairs} <= RESIDUES[ds.split]
        else:  # OOD: everything from the OOD range except the answer and its parent
            low = {path[-1], path[-2]}
            assert all(1 <= t <= n_tokens for t in low)
            assert all(n_tokens < t <= 2 * n_tokens for t in set(nodes) - low)


@pytest.mark.parametrize("split", ["train", "test", "ood"])
def test_issue_example_shapes_and_rules(split):
    ds = matching.generate(n=1000, split=split, steps=2, seq_len=13, kind="single_chain", seed=0)
    assert ds.tokens.shape == (1000, 14) and ds.tokens.dtype == torch.long
    assert ds.chains.shape == (1000, 7) and ds.paths.shape == (1000, 3)
    assert ds.inputs.shape == (1000, 13) and torch.equal(ds.answers, ds.tokens[:, -1])
    assert ds.d_vocab == 201 and ds.query_pos == 12
    check_dataset(ds)
    # the chain is the pairs in order
    for i in range(20):
        chain = ds.chains[i].tolist()
        pairs, *_ = parse(ds.tokens[i], "single_chain", 13)
        assert sorted(pairs) == sorted(zip(chain[:-1], chain[1:]))


@pytest.mark.parametrize(
    "line, answer, split",
    [
        ("13 72 72 12 38 13 78 8 8 84 12 78 12", 8, "train"),
        ("99 1 21 99 38 95 1 38 19 21 95 23 1", 95, "test"),
        ("95 8 186 165 140 105 8 127 127 186 105 95 105", 8, "ood"),
    ],
)
def test_teaching_code_examples_satisfy_our_rules(line, answer, split):
    toks = [int(t) for t in line.split()]
    pairs = [(toks[2 * i], toks[2 * i + 1]) for i in range(6)]
    path = follow(pairs, toks[-1], 2)
    assert path[-1] == answer
    if split != "ood":
        assert {(c - p) % 5 for p, c in pairs} <= RESIDUES[split]
    else:
        assert 1 <= answer <= 100 and 1 <= path[1] <= 100 and path[0] > 100


@pytest.mark.parametrize(
    "kind, seq_len, steps",
    [
        ("single_chain", 13, 2),
        ("single_chain", 21, [1, 2, 3, 4]),
        ("double_chain", 13, [1, 2]),
        ("double_chain", 17, [1, 2, 3]),
        ("with_steps", 14, [1, 2, 3]),
        ("with_steps", 8, 3),
    ],
)
@pytest.mark.parametrize("split", ["train", "test", "ood"])
def test_every_kind_follows_the_rules(kind, seq_len, steps, split):
    ds = matching.generate(n=400, split=split, steps=steps, seq_len=seq_len, kind=kind, seed=5)
    assert ds.tokens.shape == (400, seq_len + 1)
    allowed = {steps} if isinstance(steps, int) else set(steps)
    assert set(ds.steps.tolist()) == allowed  # mixtures use every k
    check_dataset(ds)


def test_double_chain_structure():
    ds = matching.generate(n=300, steps=[1, 2, 3], seq_len=17, kind="double_chain", seed=2)
    m = 3
    assert ds.chains.shape == (300, 2, m + 1) and ds.distractors.shape == (300, 2, 2)
    for i in range(300):
        a, b = ds.chains[i].tolist()
        assert not set(a) & set(b)
        for c, chain in enumerate((a, b)):
            d, target = ds.distractors[i, c].tolist()
            assert target in chain[1:-1], "a distractor points at an interior node"
            assert d not in a + b
        query_chain = (a, b)[int(ds.query_chain[i])]
        assert ds.answers[i].item() == query_chain[-1]
    # both routes to an answer occur: from a chain node and from a distractor's parent
    from_distractor = (ds.paths[:, 0:1] == ds.distractors[:, :, 0]).any(1)
    assert 0 < from_distractor.float().mean() < 0.5


def test_no_test_pair_ever_appears_in_training():
    train = matching.generate(n=20000, split="train", seed=0).pairs.reshape(-1, 2)
    test = matching.generate(n=20000, split="test", seed=0).pairs.reshape(-1, 2)
    as_set = lambda x: set(map(tuple, x.tolist()))
    assert not as_set(train) & as_set(test)
    # and the split covers the pair space it should: many distinct pairs on both sides
    assert len(as_set(train)) > 4000 and len(as_set(test)) > 2500


def test_deterministic_per_seed_and_independent_across_splits():
    a = matching.generate(n=200, seed=7)
    b = matching.generate(n=200, seed=7)
    c = matching.generate(n=200, seed=8)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.hop_pairs, b.hop_pairs)
    assert not torch.equal(a.tokens, c.tokens)
    assert torch.equal(
        matching.generate(n=50, seed=(7, 3)).tokens, matching.generate(n=50, seed=(7, 3)).tokens
    )
    assert not torch.equal(
        matching.generate(n=50, seed=(7, 3)).tokens, matching.generate(n=50, seed=(7, 4)).tokens
    )


def test_query_position_and_hops_are_spread():
    ds = matching.generate(n=5000, steps=2, seed=1)
    start = (ds.chains == ds.paths[:, :1]).float().argmax(1)
    assert set(start.tolist()) == set(range(5))  # x1..x5 can be queried for k=2 with 6 pairs
    assert set(ds.hop_pairs[:, 0].tolist()) == set(range(6))


@pytest.mark.parametrize("order, expect", [("chain", lambda i: i), ("reverse", lambda i: 5 - i)])
def test_pair_orders(order, expect):
    ds = matching.generate(n=50, order=order, seed=0)
    for i in range(50):
        chain = ds.chains[i].tolist()
        pairs, *_ = parse(ds.tokens[i], "single_chain", 13)
        assert pairs == [(chain[expect(j)], chain[expect(j) + 1]) for j in range(6)]


@pytest.mark.parametrize(
    "kind, seq_len, steps", [("single_chain", 19, (1, 3, 5)), ("double_chain", 17, (1, 2, 3))]
)
@pytest.mark.parametrize("order", ["path_chain", "path_reverse"])
def test_path_orders_sort_only_the_hop_pairs(order, kind, seq_len, steps):
    """The hop pairs sit in hop order (path_chain) or reverse hop order (path_reverse) at random
    slots; every example still holds the same pairs, query and answer as with order='random'."""
    n = 400
    ds = matching.generate(n=n, steps=steps, seq_len=seq_len, kind=kind, order=order, seed=4)
    ref = matching.generate(n=n, steps=steps, seq_len=seq_len, kind=kind, order="random", seed=4)
    assert torch.equal(ds.paths, ref.paths) and torch.equal(ds.answers, ref.answers)
    assert torch.equal(ds.inputs[:, -1], ref.inputs[:, -1])  # the query
    assert torch.equal(ds.pairs.sort(1).values, ref.pairs.sort(1).values)  # same pairs, moved
    for i in range(n):
        k = int(ds.steps[i])
        slots = ds.hop_pairs[i, :k].tolist()
        # hop j's pair maps path[j] to path[j + 1]
        for j, slot in enumerate(slots):
            assert ds.pairs[i, slot].tolist() == ds.paths[i, j : j + 2].tolist()
        assert slots == (sorted(slots) if order == "path_chain" else sorted(slots, reverse=True))
        assert sorted(slots) == sorted(ref.hop_pairs[i, :k].tolist())  # the same slots as random
        # every other pair keeps its random slot
        others = [p for p in range(ds.n_pairs) if p not in slots]
        assert torch.equal(ds.pairs[i, others], ref.pairs[i, others])
    # the slots are spread, so the answer is not at a fixed offset from the query's pair
    k_max = max(steps)
    sel = ds.steps == k_max
    offsets = (ds.hop_pairs[sel, 0] - ds.hop_pairs[sel, k_max - 1]).abs()
    assert len(set(offsets.tolist())) > 1


def test_batch_masks_only_the_answer():
    ds = matching.generate(n=8, seed=0)
    b = ds.batch()
    assert torch.equal(b.inputs, ds.tokens[:, :-1]) and torch.equal(b.targets, ds.tokens[:, 1:])
    assert b.mask.sum() == 8 and b.mask[:, -1].all()
    assert torch.equal(b.targets[b.mask], ds.answers)


def test_parents_at():
    ds = matching.generate(n=20, seed=3)
    par = ds.parents_at()
    for i in range(20):
        pairs, query, _, _ = parse(ds.tokens[i], "single_chain", 13)
        parent = {c: p for p, c in pairs}
        toks = ds.inputs[i].tolist()
        assert par[i].tolist() == [parent.get(t, -1) for t in toks]


def test_subset_indexing_keeps_ground_truth_aligned():
    ds = matching.generate(n=30, steps=[1, 2], kind="with_steps", seq_len=14, seed=0)
    sub = ds[torch.tensor([3, 7])]
    assert len(sub) == 2 and torch.equal(sub.tokens, ds.tokens[[3, 7]])
    assert torch.equal(sub.paths, ds.paths[[3, 7]]) and sub.kind == "with_steps"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seq_len": 12}, r"single_chain needs an odd seq_len >= 3.*got 12"),
        ({"seq_len": 13, "kind": "with_steps"}, r"with_steps needs an even seq_len.*got 13"),
        ({"seq_len": 15, "kind": "double_chain"}, r"double_chain needs seq_len = 4m \+ 5.*got 15"),
        ({"steps": 7}, r"steps=7 is impossible for kind='single_chain' with seq_len=13: need 1 <= k <= 6"),
        ({"steps": 0}, r"steps=0 is impossible"),
        ({"steps": [1, 3], "kind": "double_chain"}, r"steps=3 is impossible for kind='double_chain'"),
        ({"steps": []}, r"non-empty"),
        ({"split": "valid"}, r"split must be one of .*'valid'"),
        ({"kind": "triple_chain"}, r"kind must be one of .*'triple_chain'"),
        ({"n": 0}, r"n must be a positive integer; got 0"),
        ({"order": "sorted"}, r"order must be one of .*'sorted'"),
        ({"seq_len": 61}, r"needs 31 distinct tokens.*at most 30.*raise n_tokens"),
        ({"seq_len": 41, "split": "test"}, r"needs 21 distinct tokens.*test split.*at most 20"),
        ({"n_tokens": 5}, r"n_tokens must be an integer >= 10; got 5"),
    ],
)
def test_impossible_requests_raise_clear_errors(kwargs, message):
    args = {"n": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        matching.generate(**args)


def test_larger_vocabulary_allows_long_chains():
    ds = matching.generate(n=50, seq_len=61, steps=20, n_tokens=200, seed=0)
    assert ds.d_vocab == 401
    check_dataset(ds, n_tokens=200)


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(matching.KINDS),
    size=st.integers(0, 4),
    split=st.sampled_from(matching.SPLITS),
    seed=st.integers(0, 2**31 - 1),
    data=st.data(),
)
def test_rules_hold_for_any_valid_request(kind, size, split, seed, data):
    seq_len = {"single_chain": 5 + 2 * size, "with_steps": 4 + 2 * size, "double_chain": 13 + 4 * size}[kind]
    kmax = matching.max_steps(kind, seq_len)
    steps = data.draw(st.lists(st.integers(1, kmax), min_size=1, max_size=3))
    ds = matching.generate(n=30, split=split, steps=steps, seq_len=seq_len, kind=kind, seed=seed)
    check_dataset(ds)
