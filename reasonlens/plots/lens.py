"""Logit lens by depth: a target's rank, probability or top-1 accuracy after every layer."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from reasonlens.plots.common import facet_grid, facet_values, fit_layout, select

VALUES = {"mean_rank": "mean rank (0 = top)", "mean_prob": "mean probability", "top1_acc": "top-1 accuracy"}


def logit_lens_figure(df: pd.DataFrame, value: str = "mean_rank", facet: str = "model") -> go.Figure:
    """One panel per position (columns) and ``facet`` value (rows): ``value`` against depth (the
    stream read, embeddings first), one line per target.

    ``df`` is a :func:`~reasonlens.analysis.logit_lens` table.
    """
    if df.empty:
        raise ValueError("logit_lens_figure: the logit-lens table is empty")
    if value not in VALUES:
        raise ValueError(f"value must be one of {tuple(VALUES)}; got {value!r}")
    positions = sorted(set(df.position))
    rows = facet_values(df, facet)
    fig = facet_grid(rows, [f"position {p}" for p in positions], shared_yaxes=True)
    targets = list(dict.fromkeys(df.target))
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    for r, row in enumerate(rows, start=1):
        for c, position in enumerate(positions, start=1):
            panel = select(df, position=position, **({facet: row} if row is not None else {}))
            for t, target in enumerate(targets):
                line = panel[panel.target == target].sort_values("depth")
                if line.empty:
                    continue
                fig.add_trace(
                    go.Scatter(x=line.stream.tolist(), y=line[value].tolist(), mode="lines+markers",
                               name=target, legendgroup=target, showlegend=(r == 1 and c == 1),
                               line=dict(color=colors[t % len(colors)])),
                    row=r, col=c,
                )  # fmt: skip
    for c in range(1, len(positions) + 1):
        fig.update_xaxes(title_text="residual stream after", row=len(rows), col=c)
    for r in range(1, len(rows) + 1):
        fig.update_yaxes(title_text=VALUES[value], row=r, col=1)
    if value != "mean_rank":
        fig.update_yaxes(range=[0, 1.05])
    fig.update_layout(
        title=f"Logit lens: {VALUES[value]} of each target, read from the residual stream after every layer",
        template="plotly_white", height=360 * len(rows) + 120, width=max(600, 420 * len(positions)),
    )  # fmt: skip
    return fit_layout(fig)
