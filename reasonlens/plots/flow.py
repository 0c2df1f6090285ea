"""The information-flow graph of one example."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from reasonlens.plots.common import fit_layout


def information_flow_figure(
    edges: pd.DataFrame,
    tokens: Sequence[int | str] | None = None,
    min_weight: float = 0.05,
    max_width: float = 8.0,
    title: str | None = None,
) -> go.Figure:
    """Nodes are (position, depth); attention edges are solid, coloured by head, with width
    proportional to their weight (those below ``min_weight`` are left out); residual edges are
    dashed grey, drawn on top. ``edges`` is an :func:`~reasonlens.analysis.information_flow` table;
    ``tokens`` label the positions.
    """
    if edges.empty:
        raise ValueError("information_flow_figure: no edges")
    n_layers = int(edges.layer.max()) + 1
    n_pos = int(max(edges.src_pos.max(), edges.dst_pos.max())) + 1
    fig = go.Figure()
    shown = set()
    for e in edges[(edges.kind == "attention") & (edges.weight >= min_weight)].itertuples():
        name = f"head {e.head}"
        fig.add_trace(
            go.Scatter(
                x=[e.src_pos, e.dst_pos], y=[e.layer, e.layer + 1], mode="lines", name=name, legendgroup=name,
                showlegend=name not in shown, opacity=0.8,
                line=dict(color=qualitative.Plotly[e.head % 10], width=max(0.5, max_width * e.weight)),
                hovertext=f"L{e.layer} {name}: {e.dst_pos} attends to {e.src_pos} ({e.weight:.2f})",
                hoverinfo="text",
            )
        )  # fmt: skip
        shown.add(name)
    for e in edges[edges.kind == "residual"].itertuples():
        fig.add_trace(
            go.Scatter(x=[e.src_pos, e.dst_pos], y=[e.layer, e.layer + 1], mode="lines", hoverinfo="skip",
                       line=dict(color="grey", dash="dash", width=1.5), showlegend=False)
        )  # fmt: skip
    xs = [p for _ in range(n_layers + 1) for p in range(n_pos)]
    ys = [d for d in range(n_layers + 1) for _ in range(n_pos)]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", marker=dict(size=9, color="black"), showlegend=False,
                             hoverinfo="skip"))  # fmt: skip
    ticks = [f"{p}<br>{tokens[p]}" for p in range(n_pos)] if tokens is not None else list(range(n_pos))
    fig.update_xaxes(tickvals=list(range(n_pos)), ticktext=ticks, title_text="position (token)")
    depth = ["embed"] + [f"after L{i}" for i in range(n_layers)]
    fig.update_yaxes(tickvals=list(range(n_layers + 1)), ticktext=depth, title_text="depth")
    fig.update_layout(
        title=title or f"Information flow (attention weight >= {min_weight}; dashed: residual)",
        template="plotly_white", height=150 * (n_layers + 1) + 120, width=max(600, 60 * n_pos + 200),
    )  # fmt: skip
    return fit_layout(fig)
