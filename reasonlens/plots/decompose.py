"""Figure of the decomposition experiment: exact match by number of steps, one line per method."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from reasonlens.plots.common import fit_layout

METHOD_LABELS = {
    "cot": "CoT solver", "decomposer_solver": "decomposer + solver",
    "oracle_solver": "solver, true sub-questions (oracle)", "decomposer": "decomposer: sub-questions exact",
}  # fmt: skip
METHOD_STYLE = {
    "cot": ("#1f77b4", "solid"), "decomposer_solver": ("#d62728", "solid"),
    "oracle_solver": ("#2ca02c", "dash"), "decomposer": ("grey", "dot"),
}  # fmt: skip


def accuracy_by_steps_figure(results: pd.DataFrame, title: str) -> go.Figure:
    """Mean exact match (over seeds, with the min-max range as error bars when there are several)
    against the number of steps, one line per method of ``results.csv`` (columns method, n_steps,
    accuracy, seed)."""
    missing = {"method", "n_steps", "accuracy", "seed"} - set(results.columns)
    if missing:
        raise ValueError(f"accuracy_by_steps_figure: results lack column(s) {sorted(missing)}")
    fig = go.Figure()
    order = [m for m in METHOD_LABELS if m in set(results.method)]
    order += sorted(set(results.method) - set(order))
    n_seeds = results.seed.nunique()
    for method in order:
        g = results[results.method == method].groupby("n_steps").accuracy.agg(["mean", "min", "max"])
        color, dash = METHOD_STYLE.get(method, (None, "solid"))
        err = None
        if n_seeds > 1:
            err = dict(
                type="data", symmetric=False, array=g["max"] - g["mean"], arrayminus=g["mean"] - g["min"]
            )
        name = METHOD_LABELS.get(method, method)
        line = dict(color=color, dash=dash)
        fig.add_scatter(x=g.index, y=g["mean"], error_y=err, mode="lines+markers", name=name, line=line)
    fig.update_xaxes(title_text="reasoning steps in the problem", dtick=1)
    fig.update_yaxes(title_text="test exact match" + (f" (mean of {n_seeds} seeds)" if n_seeds > 1 else ""),
                     range=[0, 1.02], tickformat=".0%")  # fmt: skip
    fig.update_layout(title=title, template="plotly_white", width=800, height=450)
    return fit_layout(fig)
