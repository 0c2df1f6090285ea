"""Figure builders for the implicit-CoT experiments (plotly figures; save with
:func:`reasonlens.plots.save_figure`)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

METHOD_LABELS = {
    "no_cot": "no CoT", "explicit_cot": "explicit CoT", "implicit_kd": "implicit CoT (KD)",
    "implicit_si": "stepwise internalization", "aux_running_sum": "running-sum loss",
}  # fmt: skip
SOURCE_ORDER = ["teacher", "emulator", "coupled_emulator", "coupled_student", "nocot"]
GROUP_ORDER = ["cot_token", "next_cot_token", "partial_product", "running_sum", "answer"]


def results_figure(results: pd.DataFrame, title: str) -> go.Figure:
    """Test accuracy and decoding throughput per method (``results.csv``)."""
    labels = [METHOD_LABELS.get(m, m) for m in results.method]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("test accuracy (exact match)", "decoding throughput"))
    acc, speed = results.test_accuracy, results.examples_per_second
    acc_text, speed_text = [f"{v:.1%}" for v in acc], [f"{v:.0f}/s" for v in speed]
    fig.add_bar(x=labels, y=acc, text=acc_text, textposition="outside", showlegend=False, row=1, col=1)
    fig.add_bar(x=labels, y=speed, text=speed_text, textposition="outside", showlegend=False, row=1, col=2)
    fig.update_yaxes(range=[0, 1.12], tickformat=".0%", row=1, col=1)
    fig.update_yaxes(range=[0, 1.15 * float(speed.max())], row=1, col=2)
    fig.update_yaxes(title_text="examples per second", row=1, col=2)
    fig.update_layout(title=title, template="plotly_white", width=900, height=420)
    return fig


def training_figure(metrics: pd.DataFrame, title: str) -> go.Figure:
    """Validation curves per stage: accuracy (teacher-forced) and the emulator's unexplained
    variance. ``metrics`` is the trainers' tidy tables stacked with a ``stage`` column."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "validation accuracy (teacher forced, all tokens right)",
        "emulator: teacher-state variance unexplained",
    ))  # fmt: skip
    valid = metrics[metrics.split == "valid"]
    for stage, df in valid[valid.metric == "accuracy"].groupby("stage", sort=False):
        fig.add_scatter(x=df.step, y=df.value, mode="lines+markers", name=stage, row=1, col=1)
    emu = valid[valid.metric == "fraction_unexplained"]
    if len(emu):
        fig.add_scatter(x=emu.step, y=emu.value, mode="lines+markers", name="emulator", row=1, col=2)
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(range=[0, 1.05], row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_layout(title=title, template="plotly_white", width=1000, height=420)
    return fig


def emulated_probe_figure(probes: pd.DataFrame, title: str) -> go.Figure:
    """Mean probe accuracy vs layer, one line per source, one panel per target group; the grey
    dotted line is the mean shuffled-label control."""
    groups = [g for g in GROUP_ORDER if g in set(probes.group)]
    fig = make_subplots(rows=1, cols=len(groups), subplot_titles=groups, shared_yaxes=True)
    colors = dict(zip(SOURCE_ORDER, ["#1f77b4", "#ff7f0e", "#d62728", "#9467bd", "#2ca02c"]))
    for col, group in enumerate(groups, start=1):
        sub = probes[probes.group == group]
        mean = sub.groupby(["source", "layer"], as_index=False)[["score", "control_score"]].mean()
        for source in [s for s in SOURCE_ORDER if s in set(mean.source)]:
            df = mean[mean.source == source]
            fig.add_scatter(x=df.layer, y=df.score, mode="lines+markers", name=source, legendgroup=source,
                            line_color=colors[source], showlegend=col == 1, row=1, col=col)  # fmt: skip
        ctrl = sub.groupby("layer", as_index=False).control_score.mean()
        fig.add_scatter(x=ctrl.layer, y=ctrl.control_score, mode="lines", name="control (shuffled labels)",
                        line=dict(color="grey", dash="dot"), legendgroup="control", showlegend=col == 1,
                        row=1, col=col)  # fmt: skip
        fig.update_xaxes(title_text="layer", dtick=1, row=1, col=col)
    fig.update_yaxes(range=[0, 1.02], title_text="probe accuracy (test)", row=1, col=1)
    fig.update_layout(title=title, template="plotly_white", width=260 * len(groups) + 200, height=430)
    return fig
