"""The knockout figure draws the top edges as bars, the largest effect at the top."""

import pandas as pd
import pytest

from reasonlens.analysis import rank_edges
from reasonlens.models import Transformer
from reasonlens.plots import knockout_figure
from reasonlens.plots.knockout import edge_label
from tests.conftest import tiny_config


def test_knockout_figure(tokens):
    model = Transformer(tiny_config(norm="pre"))
    table = rank_edges(model, tokens, tokens[:, 0], layers=[1])  # 2 heads x 9 keys
    df = pd.concat([table.assign(model="a"), table.assign(model="b")], ignore_index=True)
    fig = knockout_figure(df, top=5)
    assert len(fig.data) == 2 and all(t.type == "bar" for t in fig.data)
    bars = fig.data[0]
    assert len(bars.y) == 5
    assert list(bars.x) == table.effect.head(5).tolist()[::-1]  # largest drawn last: at the top
    assert bars.y[-1] == edge_label(table.iloc[0]) and bars.y[-1].startswith("L1 H")
    assert "logit" in fig.layout.xaxis.title.text
    assert len(knockout_figure(table, top=100).data[0].y) == len(table)
    with pytest.raises(ValueError, match="top must be a positive integer"):
        knockout_figure(df, top=0)
