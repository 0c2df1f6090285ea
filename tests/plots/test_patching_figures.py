"""The path patching and attribution figures draw the tables they are given."""

import pandas as pd
import pytest

from reasonlens.analysis.attribution import attribution_patching, compare_with_exact
from reasonlens.analysis.path_patching import path_patching
from reasonlens.models import Transformer
from reasonlens.plots import attribution_figure, path_patching_figure
from tests.analysis.test_path_patching import runs
from tests.conftest import tiny_config


def test_path_patching_figure():
    model = Transformer(tiny_config(n_layers=2, norm="post", seed=5))
    clean, corrupt, good, bad = runs()
    table = path_patching(model, clean, corrupt, good, bad, senders=[("attn", 0)], positions=[2, 5])
    df = pd.concat([table.assign(model="a"), table.assign(model="b")], ignore_index=True)
    fig = path_patching_figure(df, position_labels={5: "query"})
    assert len(fig.data) == 2 and all(t.type == "heatmap" for t in fig.data)
    heat = fig.data[0]
    paths = [
        f"L0 attn -> {r}" for r in ["L0 mlp", "L1 q", "L1 k", "L1 v", "L1 mlp", "logits", "all downstream"]
    ]
    assert list(heat.y) == paths and list(heat.x) == ["2", "5 query"]
    first = table[(table.receiver == "L1 q")].set_index("position").effect
    assert heat.z[1][0] == pytest.approx(first[2]) and heat.z[1][1] == pytest.approx(first[5])
    assert fig.layout.title.text.startswith("Path patching")
    assert len(path_patching_figure(table, value="score").data) == 1
    with pytest.raises(ValueError, match="value must be"):
        path_patching_figure(table, value="logit")
    with pytest.raises(ValueError, match="empty"):
        path_patching_figure(table.iloc[:0])


def test_attribution_figure():
    model = Transformer(tiny_config(n_layers=2, norm="pre", seed=5))
    clean, corrupt, good, bad = runs()
    table, _ = compare_with_exact(model, clean, corrupt, good, bad, sites=["attn_out", "mlp_out"])
    fig = attribution_figure(pd.concat([table.assign(model="a"), table.assign(model="b")], ignore_index=True))
    kinds = [t.type for t in fig.data]
    assert kinds == ["heatmap", "heatmap", "scatter", "scatter"] * 2
    heat_a, heat_e, points = fig.data[:3]
    assert list(heat_a.y) == ["attn_out 0", "mlp_out 0", "attn_out 1", "mlp_out 1"]
    z = table.set_index(["hook", "position"])
    assert heat_a.z[2][8] == pytest.approx(z.score_attribution["blocks.1.hook_attn_out", 8])
    assert heat_e.z[2][8] == pytest.approx(z.score_exact["blocks.1.hook_attn_out", 8])
    assert len(points.x) == len(table)
    alone = attribution_figure(attribution_patching(model, clean, corrupt, good, bad))
    assert [t.type for t in alone.data] == ["heatmap"] and len(alone.data[0].y) == 2 * 5
