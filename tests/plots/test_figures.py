"""Each figure builder draws what its table says, and saves as HTML."""

import numpy as np
import pandas as pd
import pytest

from reasonlens.plots import (
    attention_figure,
    information_flow_figure,
    matching_matrix_figure,
    patching_figure,
    probe_figure,
    save_figure,
)
from reasonlens.plots.common import ordered_hooks

HOOKS = ["blocks.1.hook_resid_post", "blocks.0.hook_resid_pre", "blocks.0.hook_resid_post"]


def probe_table(models=("small", "large")):
    rows = []
    for model in models:
        for hook in HOOKS:
            for target in ("hop0", "hop1", "token"):
                for position in (3, 4):
                    score = 0.1 * len(hook) % 1
                    where = dict(model=model, hook=hook, layer=int(hook[7]), position=position, target=target)
                    rows.append(dict(**where, metric="accuracy", score=score, control_score=0.01,
                                     selectivity=score - 0.01, n_train=8, n_test=2, chance=0.01))  # fmt: skip
    return pd.DataFrame(rows)


def test_hooks_are_ordered_by_depth():
    assert ordered_hooks(HOOKS + ["blocks.0.hook_attn_out"]) == [
        "blocks.0.hook_resid_pre", "blocks.0.hook_attn_out", "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
    ]  # fmt: skip


def test_probe_figure(tmp_path):
    df = probe_table()
    fig = probe_figure(df)
    assert len(fig.data) == 2 * 2 * 2  # panels x hop targets x (score, control)
    assert len(probe_figure(df, targets=["token"]).data) == 2 * 1 * 2
    first = fig.data[0]
    assert list(first.x) == ["resid_pre 0", "resid_post 0", "resid_post 1"]
    want = df[(df.model == "small") & (df.target == "hop0") & (df.position == 4)].set_index("hook").score
    assert list(first.y) == [want[h] for h in ordered_hooks(HOOKS)]
    assert "position 4" in fig.layout.title.text
    with pytest.raises(ValueError, match="no probes at position 9"):
        probe_figure(df, position=9)
    paths = save_figure(fig, tmp_path, "probes", static=())
    assert paths[0].name == "probes.html" and paths[0].stat().st_size > 1000


def test_attention_figure():
    df = pd.DataFrame(
        [
            dict(layer=0, head=0, kind="child_to_parent", hop=None, score=0.9, chance=0.2, n_examples=5),
            dict(layer=1, head=0, kind="readout_to_hop_pair", hop=1, score=0.8, chance=0.15, n_examples=5),
            dict(layer=1, head=0, kind="child_to_parent", hop=None, score=0.1, chance=0.2, n_examples=5),
        ]
    )
    fig = attention_figure(df)
    bars = [t for t in fig.data if t.type == "bar"]
    assert [b.name for b in bars] == ["child → parent", "readout → hop 1 pair"]
    assert list(bars[0].y) == [0.9, 0.1] and list(bars[0].x) == ["L0 H0", "L1 H0"]
    ticks = [t for t in fig.data if t.type == "scatter"]
    assert list(ticks[1].y) == [0.15]


def test_matching_matrix_figure():
    tokens = [1, 2, 3]
    rows = [dict(model=m, layer=layer, head=0, query_token=q, key_token=k, value=(q == k) * 2.0 - 1.0)
            for m in ("a", "b") for layer in (1, 2) for q in tokens for k in tokens]  # fmt: skip
    fig = matching_matrix_figure(pd.DataFrame(rows))
    assert len(fig.data) == 4
    np.testing.assert_array_equal(fig.data[0].z, 2 * np.eye(3) / 2 - (1 - np.eye(3)))


def test_information_flow_figure():
    edges = pd.DataFrame(
        [
            dict(layer=0, head=-1, kind="residual", src_pos=0, dst_pos=0, weight=1.0),
            dict(layer=0, head=-1, kind="residual", src_pos=1, dst_pos=1, weight=1.0),
            dict(layer=0, head=0, kind="attention", src_pos=0, dst_pos=1, weight=0.75),
            dict(layer=0, head=0, kind="attention", src_pos=1, dst_pos=1, weight=0.01),
        ]
    )
    fig = information_flow_figure(edges, tokens=["a", "b"], min_weight=0.05, max_width=8)
    dashed = [t for t in fig.data if t.mode == "lines" and t.line.dash == "dash"]
    solid = [t for t in fig.data if t.mode == "lines" and t.line.dash != "dash"]
    assert len(dashed) == 2 and len(solid) == 1  # the 0.01 edge is below min_weight
    assert solid[0].line.width == pytest.approx(6.0) and list(solid[0].y) == [0, 1]


def test_patching_figure():
    rows = [dict(model="m", counterfactual=c, hook=h, layer=int(h[7]), position=p, score=p / 10)
            for c in ("child", "query") for h in HOOKS for p in range(3)]  # fmt: skip
    fig = patching_figure(pd.DataFrame(rows), position_labels={2: "query"})
    assert len(fig.data) == 2
    assert list(fig.data[0].x) == ["0", "1", "2 query"]
    assert list(fig.data[0].y) == ["resid_pre 0", "resid_post 0", "resid_post 1"]
    np.testing.assert_allclose(fig.data[0].z, [[0, 0.1, 0.2]] * 3)


def test_ood_figure_draws_each_variant_and_category():
    from reasonlens.plots import ood_figure

    variants = ["raw", "rescaled", "random_directions"]
    ood = pd.DataFrame(
        [dict(model=m, variant=v, accuracy=0.1 * i + 0.3 * j) for j, m in enumerate(("a", "b"))
         for i, v in enumerate(variants)]
    )  # fmt: skip
    cats = ["answer", "hop1_node", "other_in_context", "not_in_context"]
    answers = pd.DataFrame(
        [
            dict(model=m, variant=v, category=c, fraction=0.25)
            for m in ("a", "b")
            for v in variants
            for c in cats
        ]
    )
    fig = ood_figure(ood, answers)
    acc_bars = [t for t in fig.data if t.name in ("a", "b")]
    assert len(acc_bars) == 2 and list(acc_bars[1].y) == pytest.approx([0.3, 0.4, 0.5])
    assert {t.name for t in fig.data} - {"a", "b"} == set(cats)
    with pytest.raises(ValueError, match="lacks column"):
        ood_figure(ood.drop(columns="accuracy"), answers)
