"""Path patching: the effect of each sender -> receiver path at each position, as heatmaps."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go

from reasonlens.plots.common import facet_grid, facet_values, fit_layout, select


def path_label(row: pd.Series) -> str:
    """``"L0 attn -> L1 q"``: the sender and the receiver input of one path."""
    return f"{row['sender']} -> {row['receiver']}"


def path_patching_figure(
    df: pd.DataFrame,
    position_labels: Mapping[int, str] | None = None,
    facet: str = "model",
    facet_row: str = "counterfactual",
    value: str = "effect",
) -> go.Figure:
    """One heatmap per ``facet`` value (columns) and ``facet_row`` value (rows): ``value`` (the
    change of the logit difference, ``effect``, or ``score``) of each path (rows, in the table's
    order: sender by depth, then receiver) at each position patched (columns).

    ``df`` is a :func:`~reasonlens.analysis.path_patching.path_patching` table.
    """
    if df.empty:
        raise ValueError("path_patching_figure: the path patching table is empty")
    if value not in ("effect", "score"):
        raise ValueError(f"value must be 'effect' or 'score'; got {value!r}")
    df = df.assign(path=[path_label(r) for _, r in df.iterrows()])
    paths = list(dict.fromkeys(df.path))
    cols, rows = facet_values(df, facet), facet_values(df, facet_row)
    positions = sorted(set(df.position))
    ticks = [
        f"{p} {position_labels[p]}" if position_labels and p in position_labels else str(p) for p in positions
    ]
    fig = facet_grid(rows, cols, shared_yaxes=True, vertical_spacing=0.12 if len(rows) > 1 else 0.1)
    values = pd.to_numeric(df[value], errors="coerce")
    if value == "score":
        values = values - 1  # 0 = the clean run
    bound = float(values.abs().max()) if values.notna().any() and values.abs().max() > 0 else 1.0
    mid = 0.0 if value == "effect" else 1.0
    for r, row in enumerate(rows, start=1):
        for c, col in enumerate(cols, start=1):
            where = {k: v for k, v in ((facet, col), (facet_row, row)) if v is not None}
            Z = select(df, **where).pivot_table(
                index="path", columns="position", values=value, aggfunc="mean"
            )
            Z = Z.reindex(index=paths, columns=positions)
            fig.add_trace(
                go.Heatmap(z=Z.to_numpy(), x=ticks, y=paths, colorscale="RdBu", zmid=mid, zmin=mid - bound,
                           zmax=mid + bound, showscale=(r == 1 and c == len(cols)),
                           colorbar=dict(title="change of LD" if value == "effect" else "score")),
                row=r, col=c,
            )  # fmt: skip
    fig.update_xaxes(tickangle=-45)
    fig.update_yaxes(autorange="reversed")
    for c in range(1, len(cols) + 1):
        fig.update_xaxes(title_text="position patched", row=len(rows), col=c)
    fig.update_layout(
        title="Path patching: the corrupted sender's output fed to one receiver input only "
        "(change of the clean answer's logit difference; red = the path carries what the answer needs)",
        template="plotly_white", height=max(420, (18 * len(paths) + 140) * len(rows) + 120),
        width=max(700, 560 * len(cols)),
    )  # fmt: skip
    return fit_layout(fig)
