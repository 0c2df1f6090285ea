"""Heatmaps of the QK/OV matching matrix."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from reasonlens.plots.common import facet_grid, facet_values, fit_layout, select


def matching_matrix_figure(df: pd.DataFrame, facet: str = "model", head: int = 0) -> go.Figure:
    """One heatmap per layer (columns) and ``facet`` value (rows): query token (rows) x key token
    (columns), each matrix scaled to its own maximum magnitude.

    ``df`` is a :func:`~reasonlens.analysis.matching_matrix` table.
    """
    df = df[df["head"] == head]
    if df.empty:
        raise ValueError(f"matching_matrix_figure: no entries for head {head}")
    layers = sorted(set(df.layer))
    rows = facet_values(df, facet)
    fig = facet_grid(rows, [f"layer {layer}" for layer in layers], horizontal_spacing=0.06)
    for r, row in enumerate(rows, start=1):
        for c, layer in enumerate(layers, start=1):
            sub = select(df, layer=layer, **({facet: row} if row is not None else {}))
            M = sub.pivot(index="query_token", columns="key_token", values="value")
            scale = float(abs(M.to_numpy()).max()) or 1.0
            fig.add_trace(
                go.Heatmap(z=M.to_numpy() / scale, x=M.columns, y=M.index, colorscale="RdBu", zmid=0,
                           zmin=-1, zmax=1, showscale=(r == 1 and c == len(layers)),
                           colorbar=dict(title="M / max|M|")),
                row=r, col=c,
            )  # fmt: skip
            fig.update_yaxes(
                autorange="reversed", title_text="current node" if c == 1 else None, row=r, col=c
            )
            fig.update_xaxes(title_text="key token (copied parent)", row=r, col=c)
    fig.update_layout(
        title=f"Matching matrix: query layer l reads x key of the parent layer l-1 copied, head {head}",
        template="plotly_white",
        height=380 * len(rows) + 80, width=380 * len(layers) + 120,
    )  # fmt: skip
    return fit_layout(fig)
