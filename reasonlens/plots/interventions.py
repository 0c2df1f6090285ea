"""Figures for the interventions: noise variants compared over seeds, and depth versus steps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from reasonlens.plots.common import fit_layout

VARIANT_PANELS = (
    ("step_99", "steps to 99% test accuracy"),
    ("test_acc", "final test accuracy"),
    ("ood_acc", "final OOD accuracy"),
)


def variant_comparison(
    results: pd.DataFrame,
    variant: str = "label",
    facet: str = "setting",
    budget: str = "steps",
    panels: Sequence[tuple[str, str]] = VARIANT_PANELS,
    title: str = "Attention noise variants",
) -> go.Figure:
    """One row per ``facet`` value, one column per panel (a results column against ``variant``):
    every seed a point, the mean a bar. Runs that never reached 99% (``step_99`` empty) are drawn
    at their training budget (``budget`` column) as crosses and left out of the mean."""
    for col in (variant, facet, budget, *(p for p, _ in panels)):
        if col not in results.columns:
            raise ValueError(f"variant_comparison: results lack column {col!r}")
    facets = list(dict.fromkeys(results[facet]))
    variants = list(dict.fromkeys(results[variant]))
    colors = {v: qualitative.Plotly[i % len(qualitative.Plotly)] for i, v in enumerate(variants)}
    fig = make_subplots(
        rows=len(facets), cols=len(panels), horizontal_spacing=0.06, vertical_spacing=0.12,
        subplot_titles=[f"{f} · {t}" for f in facets for _, t in panels],
    )  # fmt: skip
    for r, f in enumerate(facets, start=1):
        sub = results[results[facet] == f]
        for c, (column, _) in enumerate(panels, start=1):
            for v in variants:
                d = sub[sub[variant] == v]
                y = pd.to_numeric(d[column], errors="coerce")
                censored = column == "step_99"
                reached = y.notna()
                if len(y) and reached.any():
                    fig.add_trace(
                        go.Bar(x=[v], y=[float(y[reached].mean())], marker_color=colors[v], opacity=0.35,
                               showlegend=False, hoverinfo="skip"),
                        row=r, col=c,
                    )  # fmt: skip
                seeds = d["seed"].astype(str) if "seed" in d else pd.Series([""] * len(d), index=d.index)
                hover = f"{v} seed %{{text}}: %{{y}}<extra></extra>"
                hover_x = f"{v} seed %{{text}}: not reached in %{{y}} steps<extra></extra>"
                fig.add_trace(
                    go.Scatter(x=[v] * int(reached.sum()), y=y[reached], mode="markers",
                               marker=dict(color=colors[v], size=9), showlegend=False,
                               text=seeds[reached], hovertemplate=hover),
                    row=r, col=c,
                )  # fmt: skip
                if censored and (~reached).any():
                    fig.add_trace(
                        go.Scatter(x=[v] * int((~reached).sum()), y=d.loc[~reached, budget], mode="markers",
                                   marker=dict(color=colors[v], size=10, symbol="x"), showlegend=False,
                                   text=seeds[~reached],
                                   hovertemplate=hover_x),
                        row=r, col=c,
                    )  # fmt: skip
            if column.endswith("_acc"):
                fig.update_yaxes(range=[0, 1.02], title_text="accuracy", row=r, col=c)
            elif column == "step_99":
                top = float(pd.to_numeric(sub[budget], errors="coerce").max())
                steps = pd.to_numeric(sub[column], errors="coerce")
                fig.update_yaxes(title_text="steps", row=r, col=c)
                if np.isfinite(top) and top > 0:  # from 0 to the budget: crosses sit at the top
                    fig.update_yaxes(range=[0, 1.08 * top], row=r, col=c)
                if not steps.notna().any():
                    axis = "" if (r - 1) * len(panels) + c == 1 else str((r - 1) * len(panels) + c)
                    fig.add_annotation(
                        text="no run reached 99%", showarrow=False, font=dict(size=13, color="grey"),
                        xref=f"x{axis} domain", yref=f"y{axis} domain", x=0.5, y=0.5,
                    )  # fmt: skip
    fig.update_layout(
        title=f"{title} (points: seeds; bars: means; crosses: never reached 99%, drawn at the budget)",
        template="plotly_white", barmode="overlay", height=330 * len(facets) + 120,
        width=max(900, 120 * len(variants) * len(panels)),
    )  # fmt: skip
    return fit_layout(fig)


def serial_bound(n_layers: int) -> int:
    """Steps a serial matcher resolves with ``n_layers`` layers: one to pair, one per hop."""
    return n_layers - 1


def parallel_bounds(n_layers: int) -> tuple[int, int]:
    """Tian et al.'s single-pass bounds for favourably ordered pairs: ``2^(L-1) - 1`` and
    ``(3^(L-1) - 1) / 2`` steps."""
    return 2 ** (n_layers - 1) - 1, (3 ** (n_layers - 1) - 1) // 2


def depth_heatmap(
    results: pd.DataFrame, value: str = "accuracy", facet: str = "order", title: str | None = None
) -> go.Figure:
    """Mean ``value`` over seeds on a (steps k, layers L) grid, one panel per ``facet`` value,
    with the serial line k = L - 1 and both parallel bounds drawn across the layers."""
    for col in ("n_layers", "k", value):
        if col not in results.columns:
            raise ValueError(f"depth_heatmap: results lack column {col!r}")
    facets = list(dict.fromkeys(results[facet])) if facet in results.columns else [None]
    layers = sorted(results.n_layers.unique())
    ks = sorted(results.k.unique())
    fig = make_subplots(
        rows=1, cols=len(facets), shared_yaxes=True, horizontal_spacing=0.08,
        subplot_titles=[f"{facet}: {f}" if f is not None else "" for f in facets],
    )  # fmt: skip
    lines = (  # name, bound, dash, colour, small offset so coinciding lines stay visible
        ("serial k = L-1", serial_bound, "solid", "black", -0.04),
        ("2^(L-1) - 1", lambda n: parallel_bounds(n)[0], "dash", "crimson", 0.0),
        ("(3^(L-1) - 1)/2", lambda n: parallel_bounds(n)[1], "dot", "darkorange", 0.04),
    )
    for c, f in enumerate(facets, start=1):
        sub = results if f is None else results[results[facet] == f]
        grid = sub.groupby(["n_layers", "k"])[value].mean().unstack("k").reindex(index=layers, columns=ks)
        text = np.where(np.isnan(grid.to_numpy()), "", np.vectorize(lambda v: f"{v:.2f}")(grid.to_numpy()))
        fig.add_trace(
            go.Heatmap(z=grid.to_numpy(), x=ks, y=layers, zmin=0, zmax=1, colorscale="Viridis",
                       text=text, texttemplate="%{text}", showscale=c == len(facets),
                       colorbar=dict(title=value), hovertemplate="L=%{y}, k=%{x}: %{z:.3f}<extra></extra>"),
            row=1, col=c,
        )  # fmt: skip
        for name, bound, dash, color, offset in lines:
            # a step line: for each row L, a vertical segment at k = bound(L) + 0.5 (last k it allows)
            xs, yv = [], []
            for n in layers:
                b = bound(int(n)) + 0.5 + offset
                xs += [b, b, None]
                yv += [n - 0.5, n + 0.5, None]
            fig.add_trace(
                go.Scatter(x=xs, y=yv, mode="lines", line=dict(color=color, dash=dash, width=3), name=name,
                           legendgroup=name, showlegend=c == 1, hoverinfo="skip"),
                row=1, col=c,
            )  # fmt: skip
        fig.update_xaxes(title_text="steps k", range=[ks[0] - 0.5, ks[-1] + 0.5], dtick=1, row=1, col=c)
    fig.update_yaxes(title_text="attention layers L", dtick=1, row=1, col=1)
    fig.update_layout(
        title=title or f"{value} by depth and number of steps (each line: the largest k its rule allows)",
        template="plotly_white", height=200 + 90 * len(layers), width=max(620, 520 * len(facets)),
        legend=dict(orientation="h", yanchor="top", y=-0.2, x=0),
    )  # fmt: skip
    return fit_layout(fig)
