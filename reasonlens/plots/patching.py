"""Heatmaps of activation-patching results: residual site x position."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go

from reasonlens.plots.common import facet_grid, facet_values, fit_layout, hook_labels, ordered_hooks, select


def patching_figure(
    df: pd.DataFrame,
    position_labels: Mapping[int, str] | None = None,
    facet: str = "model",
    facet_row: str = "counterfactual",
) -> go.Figure:
    """One heatmap per ``facet`` value (columns) and ``facet_row`` value (rows): the score of
    patching each residual site (rows, input to the top) at each position (columns).

    ``df`` is an :func:`~reasonlens.analysis.activation_patching` table.
    """
    if df.empty:
        raise ValueError("patching_figure: the patching table is empty")
    hooks = ordered_hooks(df.hook)
    cols, rows = facet_values(df, facet), facet_values(df, facet_row)
    positions = sorted(set(df.position))
    ticks = [
        f"{p} {position_labels[p]}" if position_labels and p in position_labels else str(p) for p in positions
    ]
    fig = facet_grid(rows, cols, shared_yaxes=True, vertical_spacing=0.3 if len(rows) > 1 else 0.1)
    # symmetric about 0 and covering the data: patching can restore more than 100% (or go negative)
    scores = pd.to_numeric(df.score, errors="coerce").abs()
    bound = max(1.0, float(scores.max())) if scores.notna().any() else 1.0
    for r, row in enumerate(rows, start=1):
        for c, col in enumerate(cols, start=1):
            where = {k: v for k, v in ((facet, col), (facet_row, row)) if v is not None}
            Z = select(df, **where).pivot(index="hook", columns="position", values="score").reindex(hooks)
            fig.add_trace(
                go.Heatmap(z=Z[positions].to_numpy(), x=ticks, y=hook_labels(hooks), colorscale="RdBu",
                           zmid=0, zmin=-bound, zmax=bound, showscale=(r == 1 and c == len(cols)),
                           colorbar=dict(title="restored")),
                row=r, col=c,
            )  # fmt: skip
    fig.update_xaxes(tickangle=-45)
    for c in range(1, len(cols) + 1):
        fig.update_xaxes(title_text="position", row=len(rows), col=c)
    fig.update_layout(
        title="Activation patching of the residual stream: fraction of the logit difference restored",
        template="plotly_white", height=380 * len(rows) + 120, width=max(600, 520 * len(cols)),
    )  # fmt: skip
    return fit_layout(fig)
