"""Attention matching scores per layer and head, against chance."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from reasonlens.plots.common import facet_grid, facet_values, fit_layout, select


def _series(row: pd.Series) -> str:
    return "child → parent" if row.kind == "child_to_parent" else f"readout → hop {int(row.hop)} pair"


def attention_figure(df: pd.DataFrame, facet: str = "model") -> go.Figure:
    """Grouped bars: for each layer (and head), the attention mass of each kind, with its chance
    level as a black tick; one panel per value of ``facet`` if present.

    ``df`` is an :func:`~reasonlens.analysis.attention_matching_scores` table.
    """
    if df.empty:
        raise ValueError("attention_figure: the attention table is empty")
    df = df.assign(series=df.apply(_series, axis=1), where=[f"L{r.layer} H{r.head}" for r in df.itertuples()])
    panels = facet_values(df, facet)
    series = list(dict.fromkeys(df.series))
    fig = facet_grid([None], panels, shared_yaxes=True)
    for c, panel in enumerate(panels, start=1):
        sub = select(df, **({facet: panel} if panel is not None else {}))
        for i, name in enumerate(series):
            s = sub[sub.series == name]
            color = qualitative.Plotly[i % len(qualitative.Plotly)]
            fig.add_trace(
                go.Bar(x=s["where"], y=s.score, name=name, legendgroup=name, showlegend=c == 1,
                       marker_color=color, offsetgroup=str(i)),
                row=1, col=c,
            )  # fmt: skip
            fig.add_trace(
                go.Scatter(x=s["where"], y=s.chance, mode="markers", name="chance", legendgroup="chance",
                           showlegend=c == 1 and i == 0, marker=dict(symbol="line-ew-open", size=18,
                           color="black", line=dict(width=2)), offsetgroup=str(i)),
                row=1, col=c,
            )  # fmt: skip
    fig.update_yaxes(title_text="attention mass", range=[0, 1.05], row=1, col=1)
    fig.update_layout(
        title="Attention that follows the matching algorithm (ticks: uniform-attention chance)",
        barmode="group", scattermode="group", template="plotly_white", height=420,
        width=max(560, 460 * len(panels)),
    )  # fmt: skip
    return fit_layout(fig)
