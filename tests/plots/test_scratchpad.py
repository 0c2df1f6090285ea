"""Figure builders of the scratchpad experiment, on small hand-made tables."""

import pandas as pd
import pytest

from reasonlens.plots.scratchpad import intermediate_probe_figure, length_accuracy_figure


def _results(seeds=(0,)):
    rows = [
        {"method": m, "digits": d, "accuracy": acc, "seed": s}
        for s in seeds
        for m, acc in (("direct", 0.5), ("scratchpad", 0.9))
        for d in range(1, 11)
    ]
    return pd.DataFrame(rows)


def test_accuracy_figure_one_line_per_method_and_the_training_range_shaded():
    fig = length_accuracy_figure(_results(), train_max=8, title="t")
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.name for t in lines] == ["direct", "scratchpad"]
    assert list(lines[1].y) == [0.9] * 10
    (shade,) = fig.layout.shapes
    assert (shade.x0, shade.x1) == (0.5, 8.5)
    # several seeds: the mean line plus each seed's markers
    two = _results((0, 1))
    two.loc[two.seed == 1, "accuracy"] = 0.1
    fig = length_accuracy_figure(two, train_max=8, title="t")
    mean = next(t for t in fig.data if t.name == "direct")
    assert list(mean.y) == pytest.approx([0.3] * 10)
    assert len(fig.data) == 4


def test_probe_figure_one_heatmap_per_depth():
    rows = [
        {"depth": d, "position": p, "token": f"t{p}", "target": f"carry{c}", "column": c,
         "score": 0.5 + 0.1 * d, "chance": 0.5}
        for d in range(3) for p in range(4) for c in (2, 1, 10)
    ]  # fmt: skip
    fig = intermediate_probe_figure(pd.DataFrame(rows), "t")
    assert len(fig.data) == 3
    assert list(fig.data[0].y) == ["carry1", "carry2", "carry10"]  # by column, not alphabetically
    assert list(fig.data[2].x) == ["0:t0", "1:t1", "2:t2", "3:t3"]
    assert fig.data[2].z[0][0] == pytest.approx(0.7)
    assert fig.layout.coloraxis.cmin == 0.5


def test_builders_refuse_empty_tables():
    with pytest.raises(ValueError, match="columns"):
        length_accuracy_figure(pd.DataFrame(), 8, "t")
    with pytest.raises(ValueError, match="columns"):
        intermediate_probe_figure(pd.DataFrame({"depth": [0]}), "t")
