"""OOD accuracy under the embedding-row variants, and what the OOD answers are."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from reasonlens.plots.training import _palette

CATEGORY_COLORS = {
    "answer": "#2ca02c",
    "hop1_node": "#ff7f0e",
    "other_in_context": "#1f77b4",
    "not_in_context": "#d62728",
}


def ood_figure(ood: pd.DataFrame, answers: pd.DataFrame, group: str = "model") -> go.Figure:
    """Left: OOD accuracy per (``group`` value, variant: raw / rescaled / random_directions).
    Right: the fractions of OOD answers in each category, stacked, per
    (``group``, variant). ``ood`` and ``answers`` are :func:`~reasonlens.analysis.ood.ood_accuracy`
    and :func:`~reasonlens.analysis.ood.ood_answers` tables with a ``group`` column."""
    for name, df, cols in (
        ("ood", ood, {group, "variant", "accuracy"}),
        ("answers", answers, {group, "variant", "category", "fraction"}),
    ):
        if missing := cols - set(df.columns):
            raise ValueError(f"ood_figure: {name} lacks column(s) {sorted(missing)}")
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=["OOD accuracy", "what OOD answers are"], horizontal_spacing=0.12
    )
    groups = list(dict.fromkeys(ood[group]))
    colors = dict(zip(groups, _palette(len(groups))))
    for g in groups:
        sub = ood[ood[group] == g]
        fig.add_trace(
            go.Bar(x=[sub[group].astype(str), sub.variant], y=sub.accuracy, name=str(g),
                   marker_color=colors[g], hovertemplate=f"{g}<br>%{{x}}: %{{y:.3f}}<extra></extra>"),
            row=1, col=1,
        )  # fmt: skip
    for cat, color in CATEGORY_COLORS.items():
        sub = answers[answers.category == cat]
        fig.add_trace(
            go.Bar(x=[sub[group].astype(str), sub.variant], y=sub.fraction, name=cat, marker_color=color,
                   hovertemplate=f"{cat}: %{{y:.3f}}<extra></extra>"),
            row=1, col=2,
        )  # fmt: skip
    fig.update_yaxes(range=[0, 1.02], title_text="accuracy", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], title_text="fraction of OOD examples", row=1, col=2)
    # x is (group, variant) in both panels: one bar per x on the left, the categories stacked on the right
    fig.update_layout(
        barmode="relative", template="plotly_white", height=460, width=1100,
        title="OOD tokens: trained rows vs untrained rows rescaled to the trained norm or random at it",
    )  # fmt: skip
    return fig
