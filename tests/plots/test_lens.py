"""The logit-lens figure draws one line per target and panel, in depth order."""

import pandas as pd
import pytest

from reasonlens.analysis import logit_lens
from reasonlens.models import Transformer
from reasonlens.plots import logit_lens_figure, save_figure
from tests.conftest import tiny_config


def test_logit_lens_figure(tokens, tmp_path):
    model = Transformer(tiny_config(norm="post"))
    extra = {"first": tokens[:, 0]}
    tables = [
        logit_lens(model, tokens, positions=[4, -1], answers=tokens[:, 1], extra_targets=extra).assign(
            model=m
        )
        for m in ("a", "b")
    ]
    df = pd.concat(tables, ignore_index=True)
    fig = logit_lens_figure(df)
    assert len(fig.data) == 2 * 2 * 2  # models x positions x targets
    first = fig.data[0]
    assert first.name == "answer" and list(first.x) == ["embed", "block 0", "block 1"]
    want = df[(df.model == "a") & (df.position == 4) & (df.target == "answer")].sort_values("depth")
    assert list(first.y) == want.mean_rank.tolist()
    assert [t.showlegend for t in fig.data[:2]] == [True, True] and not fig.data[2].showlegend
    prob = logit_lens_figure(tables[0], value="mean_prob")
    assert len(prob.data) == 2 * 2 and "probability" in prob.layout.title.text
    with pytest.raises(ValueError, match="value must be one of"):
        logit_lens_figure(df, value="rank")
    with pytest.raises(ValueError, match="empty"):
        logit_lens_figure(df.iloc[:0])
    assert save_figure(fig, tmp_path, "lens", static=())[0].stat().st_size > 1000
