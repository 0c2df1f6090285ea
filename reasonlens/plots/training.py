"""Figures of training outcomes: final accuracy against a swept setting, and learning curves."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from reasonlens.plots.common import fit_layout, value_label

SPLIT_TITLES = {"train": "train distribution", "test": "test (unseen pairs)", "ood": "OOD tokens"}


def _palette(n: int) -> list[str]:
    base = plotly.colors.qualitative.Plotly
    return [base[i % len(base)] for i in range(n)]


def accuracy_vs_setting(
    results: pd.DataFrame,
    x: str = "gamma",
    group: str = "norm",
    splits: Sequence[str] = ("train", "test", "ood"),
    title: str = "Final accuracy",
) -> go.Figure:
    """One panel per split: accuracy (``{split}_acc``) against ``x``, one line per ``group`` value
    through the mean over seeds, every seed as a point."""
    fig = make_subplots(
        rows=1, cols=len(splits), subplot_titles=[SPLIT_TITLES.get(s, s) for s in splits], shared_yaxes=True
    )
    groups = sorted(results[group].unique(), key=str)
    colors = dict(zip(groups, _palette(len(groups))))
    for col, split in enumerate(splits, start=1):
        for g in groups:
            sub = results[results[group] == g].sort_values(x)
            mean = sub.groupby(x)[f"{split}_acc"].mean()
            fig.add_trace(
                go.Scatter(
                    x=mean.index,
                    y=mean.values,
                    mode="lines",
                    line=dict(color=colors[g]),
                    name=value_label(group, g),
                    legendgroup=str(g),
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
            fig.add_trace(
                go.Scatter(
                    x=sub[x],
                    y=sub[f"{split}_acc"],
                    mode="markers",
                    marker=dict(color=colors[g], size=8),
                    name=f"{value_label(group, g)} (seeds)",
                    legendgroup=str(g),
                    showlegend=False,
                    customdata=sub[["run"]] if "run" in sub else None,
                    hovertemplate="%{customdata[0]}<br>acc %{y:.3f}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text=x, row=1, col=col)
    fig.update_yaxes(title_text="accuracy", range=[0, 1.02], row=1, col=1)
    fig.update_layout(
        title=title,
        template="plotly_white",
        height=420,
        width=380 * len(splits) + 160,
        legend_title_text=group,
    )
    return fit_layout(fig)


def learning_curves(
    curves: pd.DataFrame,
    color: str = "gamma",
    rows: str = "norm",
    splits: Sequence[str] = ("train", "test", "ood"),
    metric: str = "accuracy",
    title: str = "Learning curves",
) -> go.Figure:
    """Grid of panels (``rows`` value x split): ``metric`` over training steps, one line per run,
    coloured by ``color``."""
    row_values = sorted(curves[rows].unique(), key=str)
    fig = make_subplots(
        rows=len(row_values),
        cols=len(splits),
        shared_xaxes=True,
        shared_yaxes=True,
        subplot_titles=[
            f"{value_label(rows, r)} · {SPLIT_TITLES.get(s, s)}" for r in row_values for s in splits
        ],
    )
    color_values = sorted(curves[color].unique())
    colors = dict(zip(color_values, _palette(len(color_values))))
    data = curves[curves.metric == metric]
    shown = set()
    for i, r in enumerate(row_values, start=1):
        for j, split in enumerate(splits, start=1):
            sub = data[(data[rows] == r) & (data.split == split)]
            for run, d in sub.groupby("run", sort=True):
                c = d[color].iloc[0]
                fig.add_trace(
                    go.Scatter(
                        x=d.step,
                        y=d.value,
                        mode="lines",
                        line=dict(color=colors[c], width=1.5),
                        name=value_label(color, c),
                        legendgroup=str(c),
                        showlegend=c not in shown,
                        hovertemplate=f"{run}<br>step %{{x}}<br>{metric} %{{y:.3f}}<extra></extra>",
                    ),
                    row=i,
                    col=j,
                )
                shown.add(c)
            fig.update_xaxes(title_text="step" if i == len(row_values) else None, row=i, col=j)
        fig.update_yaxes(title_text=metric, row=i, col=1)
    if metric.endswith("accuracy"):
        fig.update_yaxes(range=[0, 1.02])
    fig.update_layout(
        title=title,
        template="plotly_white",
        height=300 * len(row_values) + 120,
        width=380 * len(splits) + 160,
        legend_title_text=color,
    )
    return fit_layout(fig)
