"""Helpers shared by the figure builders: hook ordering, facet grids, labels and a layout that
fits a 1200 px window (wrapped titles, capped widths)."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
from plotly.subplots import make_subplots

from reasonlens.probes.collect import hook_label, ordered_hooks

__all__ = [
    "MAX_WIDTH", "facet_grid", "facet_values", "fit_layout", "hook_labels", "ordered_hooks", "select",
    "value_label", "wrap_title",
]  # fmt: skip

MAX_WIDTH = 1200  # px: figures wider than this overflow a laptop window
TITLE_FONT_PX = 17  # plotly_white's title size
CHAR_PX = 0.55  # a proportional font's mean character width, per px of font size (generous)


def hook_labels(hooks: Iterable[str]) -> list[str]:
    return [hook_label(h) for h in hooks]


def facet_values(df: pd.DataFrame, column: str | None) -> list:
    """The distinct values of an optional facet column, in order of appearance ([None] if absent)."""
    if column is None or column not in df.columns:
        return [None]
    return list(dict.fromkeys(df[column].tolist()))


def select(df: pd.DataFrame, **where: object) -> pd.DataFrame:
    """Rows where each named column equals the value (``None`` values are ignored)."""
    for column, value in where.items():
        if value is not None:
            df = df[df[column] == value]
    return df


def facet_grid(rows: list, cols: list, **kwargs: object):  # noqa: ANN201 - plotly Figure
    """A subplot grid titled by its (row, col) facet values."""
    titles = [" · ".join(str(v) for v in (r, c) if v is not None) for r in rows for c in cols]
    return make_subplots(rows=len(rows), cols=len(cols), subplot_titles=titles, **kwargs)


def wrap_title(text: str, width_px: int, font_px: int = TITLE_FONT_PX, margin_px: int = 100) -> str:
    """``text`` broken with ``<br>`` at word boundaries so that each line fits ``width_px`` (less
    ``margin_px``) at ``font_px``; existing ``<br>`` breaks are kept (wrapping is idempotent)."""
    max_chars = max(10, int((width_px - margin_px) / (CHAR_PX * font_px)))
    lines = []
    for part in text.split("<br>"):
        line = ""
        for word in part.split(" "):
            if line and len(line) + 1 + len(word) > max_chars:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        lines.append(line)
    return "<br>".join(lines)


def value_label(column: str, value: object) -> str:
    """A legend or panel label for one value of ``column``: a string value names itself ("fixed
    a=1", "post-LN g=1"); a number gets the column's name ("gamma 0.5"), never ``column=value``."""
    if isinstance(value, str):
        return value
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{column} {text}"


SUBPLOT_TITLE_FONT_PX = 16  # make_subplots' panel-title size
TITLE_LINE_PX = 24  # one more title line needs this much more top margin


def _panel_widths_px(fig, width: int) -> dict[int, float]:  # noqa: ANN001 - plotly Figure
    """The width in px of the panel under each subplot-title annotation (by annotation index)."""
    margin = fig.layout.margin
    left = margin.l if margin.l is not None else 80
    right = margin.r if margin.r is not None else 80
    plot_px = max(1, width - left - right)
    domains = [tuple(fig.layout[name].domain or (0, 1)) for name in fig.layout if name.startswith("xaxis")]
    out = {}
    for i, a in enumerate(fig.layout.annotations):
        if not _is_panel_title(a) or a.x is None:
            continue
        spans = [hi - lo for lo, hi in domains if lo is not None and abs((lo + hi) / 2 - a.x) < 1e-6]
        out[i] = (min(spans) if spans else 1.0) * plot_px
    return out


def _is_panel_title(a) -> bool:  # noqa: ANN001 - plotly annotation
    return (
        a.yanchor == "bottom" and a.xref == "paper" and a.yref == "paper" and a.showarrow is False
        and isinstance(a.text, str) and bool(a.text)
    )  # fmt: skip


def fit_layout(fig, max_width: int = MAX_WIDTH):  # noqa: ANN001, ANN201 - plotly Figure
    """Cap the figure's width at ``max_width`` px, wrap its title and its panel titles (those of
    ``make_subplots``) to the width they have, and make room for the extra title lines. Returns
    ``fig`` (changed in place; calling it again changes nothing)."""
    width = fig.layout.width
    if width is not None and width > max_width:
        fig.update_layout(width=max_width)
        width = max_width
    need_top = 0
    title = fig.layout.title.text
    if title:
        wrapped = wrap_title(title, width or 700)  # plotly's default width is 700 px
        n_lines = wrapped.count("<br>") + 1
        if n_lines > 1:
            fig.update_layout(title_text=wrapped)
            need_top = 40 + TITLE_LINE_PX * n_lines + 36
    extra = 0  # extra lines of the top row's panel titles
    top_y = max((a.y for a in fig.layout.annotations if _is_panel_title(a) and a.y is not None), default=None)
    for i, px in _panel_widths_px(fig, width or 700).items():
        a = fig.layout.annotations[i]
        font = a.font.size or SUBPLOT_TITLE_FONT_PX
        wrapped = wrap_title(a.text, int(px), font_px=font, margin_px=8)
        if wrapped != a.text:
            a.text = wrapped
        if a.y == top_y:
            extra = max(extra, wrapped.count("<br>"))
    if extra:
        need_top = max(need_top, 100) + TITLE_LINE_PX * extra
    if need_top:
        top = fig.layout.margin.t if fig.layout.margin.t is not None else 100
        fig.update_layout(margin_t=max(top, need_top))
    return fig
