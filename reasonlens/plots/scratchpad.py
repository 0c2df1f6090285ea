"""Figures of the scratchpad experiment: accuracy against length for direct and scratchpad models
(training range shaded), and the direct model's probes for the intermediate values."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from reasonlens.plots.common import fit_layout

METHOD_COLORS = {"direct": "#1f77b4", "scratchpad": "#d62728"}


def length_accuracy_figure(
    results: pd.DataFrame, train_max: int, title: str, size_label: str = "digits per operand"
) -> go.Figure:
    """Exact-match accuracy against ``digits`` (``results.csv``), one line per method (the mean
    over seeds; every seed as a faint marker), the training sizes ``1 .. train_max`` shaded."""
    need = {"method", "digits", "accuracy", "seed"}
    if results.empty or not need <= set(results.columns):
        raise ValueError(f"length_accuracy_figure: needs a non-empty table with columns {sorted(need)}")
    fig = go.Figure()
    lo = float(results.digits.min()) - 0.5
    fig.add_vrect(x0=lo, x1=train_max + 0.5, fillcolor="#999999", opacity=0.15, line_width=0,
                  annotation_text="training lengths", annotation_position="top left")  # fmt: skip
    for method in dict.fromkeys(results.method):
        df = results[results.method == method]
        color = METHOD_COLORS.get(method, "#2ca02c")
        mean = df.groupby("digits", as_index=False).accuracy.mean()
        fig.add_scatter(x=mean.digits, y=mean.accuracy, mode="lines+markers", name=method, line_color=color)
        if df.seed.nunique() > 1:
            fig.add_scatter(x=df.digits, y=df.accuracy, mode="markers", name=f"{method} (each seed)",
                            marker=dict(color=color, opacity=0.35, size=6), showlegend=False)  # fmt: skip
    fig.update_xaxes(title_text=size_label, dtick=1)
    fig.update_yaxes(title_text="exact match of the final answer", range=[-0.02, 1.05], tickformat=".0%")
    fig.update_layout(title=title, template="plotly_white", width=760, height=460)
    return fit_layout(fig)


def intermediate_probe_figure(probes: pd.DataFrame, title: str) -> go.Figure:
    """Probe accuracy of each intermediate value (rows: ``carry{i}`` / ``sum{k}``) at every input
    position (columns, labelled by the token read there), one heatmap per residual-stream depth
    (``carry_probes.csv`` of one seed; the mean if there are several)."""
    need = {"depth", "position", "token", "target", "column", "score"}
    if probes.empty or not need <= set(probes.columns):
        raise ValueError(f"intermediate_probe_figure: needs a non-empty table with columns {sorted(need)}")
    depths = sorted(set(probes.depth))
    titles = ["embeddings (depth 0)" if d == 0 else f"after block {d - 1} (depth {d})" for d in depths]
    fig = make_subplots(rows=len(depths), cols=1, subplot_titles=titles, shared_xaxes=True,
                        vertical_spacing=0.06)  # fmt: skip
    order = probes.drop_duplicates("target").sort_values("column").target.tolist()
    for row, depth in enumerate(depths, start=1):
        df = probes[probes.depth == depth]
        grid = df.pivot_table(index="target", columns="position", values="score", aggfunc="mean")
        grid = grid.reindex(order)
        tokens = df.drop_duplicates("position").set_index("position").token.reindex(grid.columns)
        x = [f"{p}:{t}" for p, t in zip(grid.columns, tokens)]
        fig.add_heatmap(z=grid.values, x=x, y=list(grid.index), coloraxis="coloraxis", row=row, col=1)
    fig.update_xaxes(title_text="input position: token read", row=len(depths), col=1)
    cmin = float(probes.chance.min()) if "chance" in probes.columns else 0.0  # the colour floor: chance
    fig.update_layout(
        title=title, template="plotly_white", width=1100, height=220 * len(depths) + 160,
        coloraxis=dict(colorscale="Viridis", cmin=cmin, cmax=1.0, colorbar_title="probe accuracy"),
    )  # fmt: skip
    return fit_layout(fig)
