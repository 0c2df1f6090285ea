"""Saving figures: HTML always, PNG (and optionally SVG) when a Chromium is present.

Each figure's HTML holds only its own data (a few tens of kB) and loads plotly.js from one shared
``plotly.min.js`` beside it, written once per output folder; the folder works offline. The figure's
JSON sits in a ``<script type="application/json" id="reasonlens-figure">`` tag, which is how
:mod:`reasonlens.plots.report` reads it back (:func:`read_figure_json`).

Static export goes through kaleido 1.x, which drives a locally installed Chrome/Chromium (on
Debian: ``apt-get install chromium``). Nothing is downloaded: without a browser, static export is
skipped with a one-line note, once per process.
"""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go

from reasonlens.io import atomic_write_text
from reasonlens.plots.common import fit_layout

PLOTLY_JS = "plotly.min.js"  # the one bundle per output folder that every figure page loads
FIGURE_TAG_ID = "reasonlens-figure"
_static_ok: bool | None = None  # unknown until the first attempt
_bundle_checked: set[Path] = set()  # folders whose plotly.min.js this process has checked

_FIGURE_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<script src="{plotly_js}"></script>
</head>
<body style="margin: 0">
<div id="figure"></div>
<script type="application/json" id="{tag}">{data}</script>
<script>
const fig = JSON.parse(document.getElementById("{tag}").textContent);
Plotly.newPlot("figure", fig.data, fig.layout, {{displaylogo: false}});
</script>
</body>
</html>
"""


def static_export_available() -> bool:
    """Whether kaleido can find a Chrome/Chromium here (without downloading one)."""
    try:
        from choreographer.browsers.chromium import Chromium
    except ImportError:  # pragma: no cover - kaleido < 1 or a different backend
        return False
    try:
        return Chromium.find_browser(skip_local=False) is not None
    except Exception:  # noqa: BLE001 - any failure to look means "not available"
        return False


def plotly_bundle() -> str:
    """The plotly.js bundle of the installed plotly (the same one ``write_html`` would inline)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def figure_json(fig: go.Figure) -> str:
    """``fig`` as ASCII JSON that is safe inside a ``<script>`` element (no ``</`` in it)."""
    return json.dumps(json.loads(fig.to_json()), separators=(",", ":")).replace("</", "<\\/")


def write_plotly_bundle(out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/plotly.min.js`` (atomically) unless the installed plotly's bundle is already
    there; returns its path. Checked once per folder and process."""
    out = Path(out_dir)
    path = out / PLOTLY_JS
    key = path.resolve()
    if key in _bundle_checked and path.is_file():
        return path
    bundle = plotly_bundle().encode()
    if not (path.is_file() and path.stat().st_size == len(bundle) and path.read_bytes() == bundle):
        atomic_write_text(path, bundle.decode())
    _bundle_checked.add(key)
    return path


def page_title(text: str) -> str:
    """``text`` (which may hold plotly's ``<br>`` and tags) as plain, escaped ASCII for ``<title>``."""
    plain = " ".join(re.sub(r"<[^>]+>", " ", text).split())
    return html_lib.escape(plain).encode("ascii", "xmlcharrefreplace").decode()


def read_figure_json(path: str | os.PathLike) -> dict:
    """The figure (``{"data": ..., "layout": ...}``) stored in an HTML page written by
    :func:`save_figure`; a clear error for any other file."""
    text = Path(path).read_text(encoding="utf-8")
    match = re.search(
        rf'<script type="application/json" id="{FIGURE_TAG_ID}">(.*?)</script>', text, flags=re.DOTALL
    )
    if match is None:
        raise ValueError(f"{path}: not a figure page written by reasonlens.plots.save_figure")
    return json.loads(match.group(1))


def save_figure(
    fig: go.Figure, out_dir: str | os.PathLike, name: str, static: Sequence[str] = ("png",)
) -> list[Path]:
    """Write ``out_dir/name.html`` (loading the folder's shared ``plotly.min.js``, viewable offline)
    and, when possible, ``out_dir/name.{png,svg}``. Returns the paths written (the shared bundle is
    not listed). Each file is written atomically."""
    global _static_ok
    fit_layout(fig)  # titles wrapped, width capped, whoever built the figure
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_plotly_bundle(out)
    html = out / f"{name}.html"
    title = fig.layout.title.text or name
    page = _FIGURE_PAGE.format(
        title=page_title(title), plotly_js=PLOTLY_JS, tag=FIGURE_TAG_ID,
        data=figure_json(fig),
    )  # fmt: skip
    atomic_write_text(html, page)
    written = [html]
    if _static_ok is None:
        _static_ok = static_export_available()
        if not _static_ok:
            print(
                "note: no Chrome/Chromium found, so figures are written as HTML only "
                "(install one, e.g. `apt-get install chromium`, for PNG/SVG)",
                file=sys.stderr,
            )
    if not _static_ok:
        return written
    for ext in static:
        path = out / f"{name}.{ext}"
        tmp = out / f".{name}.{os.getpid()}.tmp.{ext}"
        try:
            fig.write_image(tmp, format=ext, scale=2 if ext == "png" else 1)
            os.replace(tmp, path)
            written.append(path)
        except Exception as err:  # noqa: BLE001 - a broken browser must not lose the results
            _static_ok = False
            print(
                f"note: static export failed ({type(err).__name__}: {err}); HTML only from now on",
                file=sys.stderr,
            )
            tmp.unlink(missing_ok=True)
            break
    return written
