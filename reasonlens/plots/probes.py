"""Probe score by residual-stream depth, one line per target (e.g. per hop)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from reasonlens.plots.common import facet_grid, facet_values, fit_layout, hook_labels, ordered_hooks, select
from reasonlens.probes.targets import hop_of


def probe_figure(
    df: pd.DataFrame, position: int | None = None, targets: list[str] | None = None, facet: str = "model"
) -> go.Figure:
    """Probe score (solid) and shuffled-label control (dotted) against hook depth, at one position
    (default: the last probed), one colour per target (default: the ``hop{j}`` targets if any);
    one panel per value of ``facet`` if present.

    ``df`` is a :func:`~reasonlens.probes.probe_sweep` table.
    """
    if df.empty:
        raise ValueError("probe_figure: the probe table is empty")
    position = int(df.position.max()) if position is None else position
    if position not in set(df.position):
        raise ValueError(f"probe_figure: no probes at position {position} (have {sorted(set(df.position))})")
    df = df[df.position == position]
    if targets is None:  # the hop targets if there are any, else every target
        targets = list(dict.fromkeys(df.target))
        targets = [t for t in targets if hop_of(t) is not None] or targets
    hooks = ordered_hooks(df.hook)
    labels = dict(zip(hooks, hook_labels(hooks)))
    panels = facet_values(df, facet)
    fig = facet_grid([None], panels, shared_yaxes=True)
    colors = qualitative.Plotly
    for c, panel in enumerate(panels, start=1):
        sub = select(df, **({facet: panel} if panel is not None else {}))
        for i, target in enumerate(targets):
            t = sub[sub.target == target].set_index("hook").reindex(hooks)
            color = colors[i % len(colors)]
            x = [labels[h] for h in hooks]
            for column, dash, name in (
                ("score", "solid", target),
                ("control_score", "dot", f"{target} control"),
            ):
                fig.add_trace(
                    go.Scatter(
                        x=x, y=t[column], mode="lines+markers", name=name, legendgroup=name,
                        showlegend=c == 1, line=dict(color=color, dash=dash),
                    ),
                    row=1, col=c,
                )  # fmt: skip
    metric = " / ".join(sorted(set(df.metric)))
    fig.update_yaxes(title_text=metric, row=1, col=1)
    fig.update_xaxes(title_text="residual stream site")
    fig.update_layout(
        title=f"Linear probes at position {position}: {metric} by depth (dotted: shuffled-label control)",
        template="plotly_white", height=520, width=max(560, 440 * len(panels)),
        legend=dict(orientation="h", yanchor="top", y=-0.25, x=0),
    )  # fmt: skip
    return fit_layout(fig)
