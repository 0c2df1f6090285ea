"""Attention knockout: the edges whose removal costs the answer most, as bars."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from reasonlens.plots.common import facet_grid, facet_values, fit_layout, select


def edge_label(row: pd.Series) -> str:
    """``"L1 H0 12<-3"``: layer, head (``all`` for every head), query position <- key position."""
    head = "all" if pd.isna(row["head"]) else int(row["head"])
    return f"L{int(row['layer'])} H{head} {int(row['query_position'])}<-{int(row['key_position'])}"


def knockout_figure(df: pd.DataFrame, top: int = 10, facet: str = "model") -> go.Figure:
    """One panel per ``facet`` value: the ``top`` edges by effect (largest at the top) as
    horizontal bars, the bar's hover giving the edge's clean attention weight.

    ``df`` is a :func:`~reasonlens.analysis.rank_edges` table.
    """
    if df.empty:
        raise ValueError("knockout_figure: the knockout table is empty")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive integer; got {top!r}")
    cols = facet_values(df, facet)
    fig = facet_grid([None], cols)
    for c, col in enumerate(cols, start=1):
        panel = select(df, **({facet: col} if col is not None else {}))
        bars = panel.sort_values("effect", ascending=False, kind="stable").head(top).iloc[::-1]
        fig.add_trace(
            go.Bar(x=bars.effect.tolist(), y=[edge_label(r) for _, r in bars.iterrows()], orientation="h",
                   customdata=bars.attention.tolist() if "attention" in bars else None,
                   hovertemplate="effect %{x:.3f}<br>attention %{customdata:.3f}<extra></extra>",
                   marker_color="#1f77b4", showlegend=False),
            row=1, col=c,
        )  # fmt: skip
        fig.update_xaxes(
            title_text=f"drop in {panel.metric.iloc[0]}" if "metric" in panel else "effect", row=1, col=c
        )
    mode = f" ({df['mode'].iloc[0]})" if "mode" in df else ""
    fig.update_layout(
        title=f"Attention knockout{mode}: the {top} edges whose removal lowers the answer most",
        template="plotly_white", height=max(360, 28 * top + 160), width=max(600, 480 * len(cols)),
    )  # fmt: skip
    return fit_layout(fig)
