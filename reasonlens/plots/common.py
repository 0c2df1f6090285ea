"""Helpers shared by the figure builders: hook ordering, facet grids, labels and a layout that
fits a 1200 px window (wrapped titles, capped widths)."""

from __future__ import annotations

import re
from collections.abc import Iterable

import pandas as pd
from plotly.subplots import make_subplots

from reasonlens.probes.collect import hook_label, ordered_hooks

__all__ = [
    "MAX_WIDTH", "checkpoint_identity", "facet_grid", "facet_values", "fit_layout", "hook_labels",
    "model_identity", "ordered_hooks", "select", "value_label", "with_run_identity", "wrap_title",
]  # fmt: skip

MAX_WIDTH = 1200  # px: figures wider than this overflow a laptop window
TITLE_FONT_PX = 17  # plotly_white's title size
IDENTITY_OPEN, IDENTITY_CLOSE = "<sup>", "</sup>"  # the run-identity lines under a title
SUP_SCALE = 0.7  # plotly draws <sup> text at 70% of the font size
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
    ``margin_px``) at ``font_px``; existing ``<br>`` breaks are kept (wrapping is idempotent).
    Tags do not count as width; a line wholly in ``<sup>..</sup>`` (a smaller font) is wrapped at
    that font's size and each of its pieces keeps the tags."""
    lines = []
    for part in text.split("<br>"):
        small = part.startswith(IDENTITY_OPEN) and part.endswith(IDENTITY_CLOSE)
        if small:
            part = part[len(IDENTITY_OPEN) : -len(IDENTITY_CLOSE)]
        size = font_px * SUP_SCALE if small else font_px
        max_chars = max(10, int((width_px - margin_px) / (CHAR_PX * size)))
        pieces, line = [], ""
        for word, sep in _words(part, max_chars):
            if line and _visible_len(line) + len(sep) + _visible_len(word) > max_chars:
                pieces.append(line)
                line = word
            else:
                line = f"{line}{sep}{word}" if line else word
        pieces.append(line)
        lines += [f"{IDENTITY_OPEN}{p}{IDENTITY_CLOSE}" for p in pieces] if small else pieces
    return "<br>".join(lines)


def _words(text: str, max_chars: int) -> list[tuple[str, str]]:
    """``text``'s words with the separator before each (" "); a word longer than a line (a file
    path) is cut after its slashes into pieces joined by "" so that it can wrap too."""
    out = []
    for word in text.split(" "):
        if _visible_len(word) <= max_chars or "/" not in word:
            out.append((word, " "))
            continue
        parts = [p + "/" for p in word.split("/")[:-1]] + [word.split("/")[-1]]
        out += [(p, " " if i == 0 else "") for i, p in enumerate(parts) if p]
    return out


def _visible_len(text: str) -> int:
    """Characters of ``text`` a reader sees: plotly's pseudo-HTML tags (``<sup>``, ``<b>``) excluded."""
    return len(re.sub(r"<[^>]*>", "", text))


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


def model_identity(cfg, path: object = None, sha256: str | None = None, steps: int | None = None) -> str:  # noqa: ANN001 - a ModelConfig
    """A short line naming an analysed model: its file (or folder), the first 8 hex digits of its
    tensors' SHA-256 when known, and the variant (depth, width, norm placement, init, seed; when
    ``cfg`` is given) and the training steps (when given), e.g.
    ``runs/g0.5_post_s1/model.safetensors (sha256 1a2b3c4d): 3L d128 post-LN normal gamma 0.5 seed 1``."""
    head = str(path) if path is not None else "in-memory model"
    if sha256:
        head += f" (sha256 {sha256[:8]})"
    text = head
    if cfg is not None:
        norm = "no-norm" if cfg.norm in (None, "none") else f"{cfg.norm}-LN"
        text += f": {cfg.n_layers}L d{cfg.d_model} {norm} {cfg.init} gamma {cfg.gamma:g} seed {cfg.seed}"
    if steps is not None:
        text += f", {steps} steps"
    return text


def checkpoint_identity(path, steps: int | None = None) -> str:  # noqa: ANN001 - str or PathLike
    """:func:`model_identity` of a model file written by ``Transformer.save``: its config and
    tensor hash read from the file's header (the weights are not loaded)."""
    from reasonlens.checkpoints import stored_sha256
    from reasonlens.models import Transformer

    return model_identity(Transformer.read_config(path), path, stored_sha256(path), steps)


def with_run_identity(fig, lines: Iterable[str]):  # noqa: ANN001, ANN201 - plotly Figure
    """Name the analysed run(s) in the figure itself: ``lines`` (one per model, e.g. from
    :func:`model_identity`) become small lines under the title, so a PNG or HTML file seen alone
    still says which checkpoint it shows. Returns ``fig`` (changed in place; calling it again
    replaces the lines rather than adding more)."""
    title = fig.layout.title.text or ""
    title = title.split("<br>" + IDENTITY_OPEN)[0].split(IDENTITY_OPEN)[0]
    body = "<br>".join(f"{IDENTITY_OPEN}{line}{IDENTITY_CLOSE}" for line in lines if line)
    fig.update_layout(title_text="<br>".join(t for t in (title, body) if t))
    return fit_layout(fig)
