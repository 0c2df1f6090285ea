"""Figure builders for the implicit-CoT experiments (plotly figures; save with
:func:`reasonlens.plots.save_figure`)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from reasonlens.plots.common import fit_layout

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
    return fit_layout(fig)


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
    return fit_layout(fig)


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
    return fit_layout(fig)


ANSWER_TARGET_ORDER = ["running_sum", "column_sum", "carry_in", "answer_digit"]


def answer_probe_figure(probes: pd.DataFrame, title: str) -> go.Figure:
    """Answer-position probes (``answer_probes.csv``): one panel per target (R^2 for the sums,
    accuracy otherwise), score vs depth, one line per (method, answer digit); dotted: controls."""
    targets = [t for t in ANSWER_TARGET_ORDER if t in set(probes.target)]
    fig = make_subplots(rows=1, cols=len(targets), subplot_titles=targets)
    methods = list(dict.fromkeys(probes.method))
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    for col, target in enumerate(targets, start=1):
        sub = probes[probes.target == target]
        for mi, method in enumerate(methods):
            mdf = sub[sub.method == method]
            for k, df in mdf.groupby("answer_digit"):
                name = f"{METHOD_LABELS.get(method, method)}"
                fig.add_scatter(
                    x=df.layer, y=df.score, mode="lines+markers", name=name, legendgroup=method,
                    showlegend=bool(col == 1 and k == mdf.answer_digit.min()), line_color=palette[mi % 5],
                    hovertext=f"answer digit {k}", row=1, col=col,
                )  # fmt: skip
        ctrl = sub.groupby("layer", as_index=False).control_score.mean()
        fig.add_scatter(x=ctrl.layer, y=ctrl.control_score, mode="lines", name="control (shuffled labels)",
                        line=dict(color="grey", dash="dot"), legendgroup="control", showlegend=col == 1,
                        row=1, col=col)  # fmt: skip
        fig.update_xaxes(title_text="depth (0 = embeddings)", dtick=1, row=1, col=col)
        fig.update_yaxes(range=[-0.05, 1.02], row=1, col=col)
    fig.update_layout(title=title, template="plotly_white", width=280 * len(targets) + 220, height=430)
    return fit_layout(fig)


def answer_attention_figure(attention: pd.DataFrame, title: str) -> go.Figure:
    """Attention from each answer position to the operand digits (``answer_attention.csv``), summed
    over heads: one heatmap per (method, layer), a row of panels per method (named on its y axis)
    and a column per layer; answer digit down, operand digit across."""
    methods = list(dict.fromkeys(attention.method))
    layers = sorted(set(attention.layer))
    present = set(attention.groupby(["method", "layer"], sort=False).groups)
    titles = [f"layer {layer}" if (m, layer) in present else "" for m in methods for layer in layers]
    height = 230 * len(methods) + 180
    fig = make_subplots(
        rows=len(methods), cols=len(layers), subplot_titles=titles,
        horizontal_spacing=0.06, vertical_spacing=min(0.3, 75 / (height - 180)) if len(methods) > 1 else 0.1,
    )  # fmt: skip
    for row, method in enumerate(methods, start=1):
        for col, layer in enumerate(layers, start=1):
            df = attention[(attention.method == method) & (attention.layer == layer)]
            if df.empty:
                continue
            grid = df.assign(key=df.operand + df.operand_digit.astype(str)).pivot_table(
                index="answer_digit", columns="key", values="weight", aggfunc="sum", sort=False
            )
            fig.add_heatmap(z=grid.values, x=list(grid.columns), y=[f"c{k}" for k in grid.index],
                            coloraxis="coloraxis", name=f"{METHOD_LABELS.get(method, method)}, layer {layer}",
                            row=row, col=col)  # fmt: skip
        fig.update_yaxes(title_text=METHOD_LABELS.get(method, method), row=row, col=1)
    fig.update_layout(title=title, template="plotly_white", width=min(1200, 230 * len(layers) + 220),
                      height=height,
                      coloraxis=dict(colorscale="Viridis", colorbar_title="attention"))  # fmt: skip
    return fit_layout(fig)
