"""One page per experiment run: ``report.html`` under the run's output folder.

The page holds, in this order: the question the experiment asks, notes (a short summary), the
headline table, every figure of the run (interactive, drawn from the data stored in each figure's
HTML page by :func:`reasonlens.plots.save_figure`), every CSV (linked, with its size, columns and
first rows), other files (linked) and the run's configuration. plotly.js is inlined once, so the
page works offline and on its own.

    written = [...]  # the paths the run wrote (figures' .html/.png, .csv, .json)
    write_report(out, title="...", question="...", config=vars(args), headline=table,
                 **report_files(written))
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import html
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from reasonlens.io import atomic_write_text
from reasonlens.plots.save import plotly_bundle, read_figure_json

__all__ = ["REPORT_NAME", "report_files", "write_report"]

REPORT_NAME = "report.html"
FIGURE_CLASS = "rl-figure"  # one div per figure (the browser test looks for these)
PREVIEW_ROWS = 5
STATIC_SUFFIXES = (".png", ".svg")

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1240px; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.5em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05em; margin-bottom: 0.3em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: left; vertical-align: top;
         overflow-wrap: anywhere; }
th { background: #f4f4f4; }
.scroll { overflow-x: auto; max-width: 100%; }
.question { font-size: 1.05em; white-space: pre-wrap; }
.links { font-size: 0.9em; color: #555; }
figure { margin: 0 0 1.5em 0; }
nav a { margin-right: 1em; }
"""


def _stem_key(path: Path) -> Path:
    return path.with_suffix("")


def report_files(written: Iterable[str | os.PathLike]) -> dict[str, list[Path]]:
    """Sort the paths a run wrote into :func:`write_report`'s ``figures`` (figure pages, in order,
    one per name however many formats were written), ``csvs`` and ``files`` (everything else;
    ``report.html`` and the shared ``plotly.min.js`` are left out)."""
    figures: dict[Path, Path] = {}
    csvs: list[Path] = []
    files: list[Path] = []
    for p in map(Path, written):
        if p.name in (REPORT_NAME, "plotly.min.js"):
            continue
        if p.suffix == ".html" or p.suffix in STATIC_SUFFIXES:
            figures.setdefault(_stem_key(p), p.with_suffix(".html"))
        elif p.suffix == ".csv":
            if p not in csvs:
                csvs.append(p)
        elif p not in files:
            files.append(p)
    return {"figures": list(figures.values()), "csvs": csvs, "files": files}


def _rel(path: Path, out: Path) -> str:
    return Path(os.path.relpath(path.resolve(), out.resolve())).as_posix()


def _link(path: Path, out: Path, text: str | None = None) -> str:
    rel = _rel(path, out)
    return f'<a href="{html.escape(rel)}">{html.escape(text or rel)}</a>'


def _value_text(value: object) -> str:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(_value_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _table(df: pd.DataFrame) -> str:
    return (
        '<div class="scroll">'
        + df.to_html(index=False, border=0, na_rep="", float_format=lambda v: f"{v:.4g}", escape=True)
        + "</div>"
    )


def _config_cell(value: object) -> str:
    """A plain value as text; a dataclass (a preset, a setup) or a mapping folded, as JSON."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        label, data = type(value).__name__, dataclasses.asdict(value)
    elif isinstance(value, Mapping):
        label, data = f"{len(value)} entries", dict(value)
    else:
        return html.escape(_value_text(value))
    text = json.dumps(data, indent=1, default=_value_text, sort_keys=False)
    return f"<details><summary>{html.escape(label)}</summary><pre>{html.escape(text)}</pre></details>"


def _config_table(config: Mapping[str, object]) -> str:
    cells = ((html.escape(str(k)), _config_cell(v)) for k, v in config.items())
    rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in cells)
    return f"<table>{rows}</table>"


def _count_rows(path: Path) -> int:
    with path.open("rb") as f:
        return max(0, sum(1 for _ in f) - 1)


def _resolve_figure(fig: str | os.PathLike, out: Path) -> Path:
    p = Path(fig)
    if p.suffix in STATIC_SUFFIXES or p.suffix == ".html":
        p = p.with_suffix(".html")
    else:  # a bare figure name: the page save_figure wrote under out
        p = out / f"{p.name}.html" if len(p.parts) == 1 else p.with_name(p.name + ".html")
    return p


def _json_for_script(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":")).replace("</", "<\\/")


def write_report(
    out_dir: str | os.PathLike,
    *,
    title: str,
    question: str,
    config: Mapping[str, object],
    headline: pd.DataFrame | None = None,
    figures: Sequence[str | os.PathLike] = (),
    csvs: Sequence[str | os.PathLike] = (),
    files: Sequence[str | os.PathLike] = (),
    notes: str | Sequence[str] = (),
    name: str = REPORT_NAME,
) -> Path:
    """Write ``out_dir/name`` (default ``report.html``) and return its path.

    ``figures``: the run's figures in display order, as figure names (``"heatmap"``) or paths of the
    files :func:`~reasonlens.plots.save_figure` wrote (``.html``; a ``.png`` stands for its page);
    ``csvs``: CSV files, linked with their shape and first rows; ``files``: other outputs, linked;
    ``notes``: a short summary (lines) shown under the question; ``headline``: the table a reader
    should see first. Every listed file must exist (checked before anything is written)."""
    out = Path(out_dir)
    if not title or not question:
        raise ValueError(f"a report needs a title and a question; got title={title!r}, question={question!r}")
    fig_paths = list(dict.fromkeys(_resolve_figure(f, out) for f in figures))
    csv_paths = list(dict.fromkeys(Path(c) for c in csvs))
    other = list(dict.fromkeys(Path(f) for f in files))
    missing = [str(p) for p in [*fig_paths, *csv_paths] if not p.is_file()]
    missing += [str(p) for p in other if not p.exists()]
    if missing:
        raise ValueError(f"report {out / name}: these files do not exist: {', '.join(missing)}")
    figs = [(p, read_figure_json(p)) for p in fig_paths]  # a clear error for a foreign page

    parts = [
        f"<h1>{html.escape(title)}</h1>",
        '<nav class="links">'
        + "".join(
            f'<a href="#{a}">{t}</a>'
            for a, t, show in (
                ("headline", "headline", headline is not None),
                ("figures", f"figures ({len(figs)})", bool(figs)),
                ("data", f"data ({len(csv_paths)} CSV)", bool(csv_paths)),
                ("files", "other files", bool(other)),
                ("configuration", "configuration", True),
            )
            if show
        )
        + "</nav>",
        f'<h2 id="question">Question</h2><p class="question">{html.escape(question.strip())}</p>',
    ]
    note_lines = [notes] if isinstance(notes, str) else list(notes)
    if note_lines:
        parts.append("<pre>" + html.escape("\n".join(note_lines)) + "</pre>")
    if headline is not None:
        parts.append('<h2 id="headline">Headline</h2>' + _table(headline))
    if figs:
        parts.append('<h2 id="figures">Figures</h2>')
        for i, (page, _) in enumerate(figs):
            links = [_link(page, out, "interactive page")]
            links += [
                _link(page.with_suffix(s), out) for s in STATIC_SUFFIXES if page.with_suffix(s).is_file()
            ]
            parts.append(
                f'<figure id="figure-{i}"><h3>{html.escape(page.stem)}</h3>'
                f'<div class="links">{" · ".join(links)}</div>'
                f'<div class="scroll"><div class="{FIGURE_CLASS}" id="plot-{i}" '
                f'data-name="{html.escape(page.stem)}"></div></div></figure>'
            )
    if csv_paths:
        parts.append('<h2 id="data">Data</h2>')
        for path in csv_paths:
            head = pd.read_csv(path, nrows=PREVIEW_ROWS)
            n = _count_rows(path)
            cols = ", ".join(map(str, head.columns))
            parts.append(
                f"<h3>{_link(path, out)}</h3>"
                f'<div class="links">{n} rows × {len(head.columns)} columns: {html.escape(cols)}</div>'
                f"<details><summary>first {min(n, PREVIEW_ROWS)} rows</summary>{_table(head)}</details>"
            )
    if other:
        parts.append(
            '<h2 id="files">Other files</h2><ul>'
            + "".join(f"<li>{_link(p, out)}</li>" for p in other)
            + "</ul>"
        )
    parts.append('<h2 id="configuration">Configuration</h2>' + _config_table(config))
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f'<p class="links">written {stamp} by reasonlens.plots.report</p>')

    data = _json_for_script([{"data": f.get("data", []), "layout": f.get("layout", {})} for _, f in figs])
    script = (
        f'<script type="application/json" id="rl-figures">{data}</script>\n<script>\n'
        'const figs = JSON.parse(document.getElementById("rl-figures").textContent);\n'
        'figs.forEach((f, i) => Plotly.newPlot("plot-" + i, f.data, f.layout, {displaylogo: false}));\n'
        "</script>"
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n"
        + (f"<script>{plotly_bundle()}</script>\n" if figs else "")
        + "</head>\n<body>\n"
        + "\n".join(parts)
        + "\n"
        + (script if figs else "")
        + "\n</body>\n</html>\n"
    )
    return atomic_write_text(out / name, page.encode("ascii", "xmlcharrefreplace").decode())
