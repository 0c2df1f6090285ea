"""Attribution patching next to exact activation patching: site x position heatmaps and a scatter."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go

from reasonlens.plots.common import facet_grid, facet_values, fit_layout, hook_labels, ordered_hooks, select

METHODS = {"score_attribution": "attribution (gradient)", "score_exact": "exact patching"}


def attribution_figure(
    df: pd.DataFrame, position_labels: Mapping[int, str] | None = None, facet: str = "model"
) -> go.Figure:
    """Per ``facet`` value (rows): the attribution score and, where the table has it, the exact
    patching score of every site (heatmap rows, input at the top) at every position, on one color
    scale, and a scatter of one against the other (one point per site and position).

    ``df`` is a :func:`~reasonlens.analysis.attribution.compare_with_exact` table (or an
    :func:`~reasonlens.analysis.attribution.attribution_patching` table: its ``score`` alone).
    """
    if df.empty:
        raise ValueError("attribution_figure: the attribution table is empty")
    if "score_attribution" not in df:
        if "score" not in df:
            raise ValueError("attribution_figure: the table has neither score_attribution nor score")
        df = df.rename(columns={"score": "score_attribution"})
    methods = [m for m in METHODS if m in df]
    rows = facet_values(df, facet)
    hooks = ordered_hooks(df.hook)
    positions = sorted(set(df.position))
    ticks = [
        f"{p} {position_labels[p]}" if position_labels and p in position_labels else str(p) for p in positions
    ]
    cols = [METHODS[m] for m in methods] + (["attribution against exact"] if len(methods) == 2 else [])
    fig = facet_grid(rows, cols, vertical_spacing=0.3 / max(1, len(rows)) + 0.05)
    values = pd.concat([pd.to_numeric(df[m], errors="coerce") for m in methods])
    bound = max(1.0, float(values.abs().max())) if values.notna().any() else 1.0
    for r, row in enumerate(rows, start=1):
        panel = select(df, **({facet: row} if row is not None else {}))
        for c, method in enumerate(methods, start=1):
            Z = panel.pivot(index="hook", columns="position", values=method).reindex(
                index=hooks, columns=positions
            )
            fig.add_trace(
                go.Heatmap(z=Z.to_numpy(), x=ticks, y=hook_labels(hooks), colorscale="RdBu", zmid=0,
                           zmin=-bound, zmax=bound, showscale=(r == 1 and c == 1),
                           colorbar=dict(title="restored")),
                row=r, col=c,
            )  # fmt: skip
            fig.update_yaxes(autorange="reversed", row=r, col=c)
        if len(methods) == 2:
            labels = [f"{h} @ {p}" for h, p in zip(hook_labels(panel.hook), panel.position)]
            fig.add_trace(
                go.Scatter(x=panel.score_exact.tolist(), y=panel.score_attribution.tolist(), mode="markers",
                           text=labels, marker=dict(size=6, color="#1f77b4"), showlegend=False,
                           hovertemplate="%{text}<br>exact %{x:.3f}<br>attribution %{y:.3f}<extra></extra>"),
                row=r, col=3,
            )  # fmt: skip
            fig.add_trace(
                go.Scatter(x=[-bound, bound], y=[-bound, bound], mode="lines", showlegend=False,
                           line=dict(color="#999", dash="dot"), hoverinfo="skip"),
                row=r, col=3,
            )  # fmt: skip
            fig.update_xaxes(title_text="exact score", row=r, col=3)
            fig.update_yaxes(title_text="attribution score", row=r, col=3)
    fig.update_xaxes(tickangle=-45)
    fig.update_layout(
        title="Attribution patching (activation difference x gradient) and exact activation patching: "
        "fraction of the logit difference restored",
        template="plotly_white", height=380 * len(rows) + 140, width=max(700, 420 * len(cols)),
    )  # fmt: skip
    return fit_layout(fig)
