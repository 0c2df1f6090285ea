"""The noise-variant comparison and the depth heatmap draw what their tables say."""

import numpy as np
import pandas as pd
import pytest

from reasonlens.plots import save_figure
from reasonlens.plots.interventions import depth_heatmap, parallel_bounds, serial_bound, variant_comparison


def test_bounds():
    assert [serial_bound(n) for n in (2, 3, 4, 5)] == [1, 2, 3, 4]
    assert [parallel_bounds(n) for n in (2, 3, 4, 5)] == [(1, 1), (3, 4), (7, 13), (15, 40)]


def variant_results():
    rows = []
    for setting in ("post-LN g=1", "pre-LN g=1"):
        for label, step in (("none", None), ("fixed a=1", 300)):
            for seed in (0, 1):
                budget = 500 if step is None else step
                rows.append(dict(setting=setting, label=label, seed=seed, steps=budget, step_99=step,
                                 test_acc=0.2 if step is None else 1.0, ood_acc=0.5))  # fmt: skip
    return pd.DataFrame(rows)


def test_variant_comparison(tmp_path):
    fig = variant_comparison(variant_results())
    assert len(fig.layout.annotations) == 2 * 3  # settings x panels
    crosses = [t for t in fig.data if t.type == "scatter" and t.marker.symbol == "x"]
    # runs that never reached 99% are drawn at their budget, once per setting
    assert len(crosses) == 2 and all(list(t.y) == [500, 500] for t in crosses)
    bars = [t for t in fig.data if t.type == "bar"]
    assert {(t.x[0], round(t.y[0], 3)) for t in bars} >= {
        ("fixed a=1", 300.0),
        ("none", 0.2),
        ("fixed a=1", 1.0),
    }
    assert save_figure(fig, tmp_path, "v", static=())[0].stat().st_size > 10_000
    with pytest.raises(ValueError, match="lack column 'label'"):
        variant_comparison(variant_results().drop(columns="label"))


def test_depth_heatmap_cells_and_bound_lines():
    def acc(n, k, order, seed):
        return (1.0 if k < n else 0.0) if order == "random" else 0.5 + seed / 4

    rows = [dict(n_layers=n, k=k, order=o, seed=s, accuracy=acc(n, k, o, s))
            for n in (2, 3) for k in range(1, 5) for o in ("random", "favourable")
            for s in (0, 1)]  # fmt: skip
    fig = depth_heatmap(pd.DataFrame(rows))
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 2
    np.testing.assert_allclose(heat[0].z, [[1, 0, 0, 0], [1, 1, 0, 0]])  # rows L = 2, 3; columns k
    np.testing.assert_allclose(heat[1].z, np.full((2, 4), 0.625))  # mean over seeds
    lines = {t.name: t for t in fig.data if t.type == "scatter" and t.showlegend}
    assert set(lines) == {"serial k = L-1", "2^(L-1) - 1", "(3^(L-1) - 1)/2"}
    # the upper bound for L = 3 is k = 4: its line sits just right of column 4
    upper = [x for x in lines["(3^(L-1) - 1)/2"].x if x is not None]
    assert upper[2] == pytest.approx(4.54)
    with pytest.raises(ValueError, match="lack column 'k'"):
        depth_heatmap(pd.DataFrame(rows).drop(columns="k"))
