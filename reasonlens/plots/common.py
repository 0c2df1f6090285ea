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


def fit_layout(fig, max_width: int = MAX_WIDTH):  # noqa: ANN001, ANN201 - plotly Figure
    """Cap the figure's width at ``max_width`` px and wrap its title to the width, making room for
    the extra title lines. Returns ``fig`` (changed in place)."""
    width = fig.layout.width
    if width is not None and width > max_width:
        fig.update_layout(width=max_width)
        width = max_width
    title = fig.layout.title.text
    if title:
        wrapped = wrap_title(title, width or 700)  # plotly's default width is 700 px
        n_lines = wrapped.count("<br>") + 1
        if n_lines > 1:
            top = fig.layout.margin.t if fig.layout.margin.t is not None else 100
            fig.update_layout(title_text=wrapped, margin_t=max(top, 40 + 24 * n_lines + 36))
    return fig
