"""Saving figures: self-contained HTML always, PNG (and optionally SVG) when a Chromium is present.

Static export goes through kaleido 1.x, which drives a locally installed Chrome/Chromium (on
Debian: ``apt-get install chromium``). Nothing is downloaded: without a browser, static export is
skipped with a one-line note, once per process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go

from reasonlens.plots.common import fit_layout

_static_ok: bool | None = None  # unknown until the first attempt


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


def save_figure(
    fig: go.Figure, out_dir: str | os.PathLike, name: str, static: Sequence[str] = ("png",)
) -> list[Path]:
    """Write ``out_dir/name.html`` (plotly.js embedded, viewable offline) and, when possible,
    ``out_dir/name.{png,svg}``. Returns the paths written. Each file is written atomically."""
    global _static_ok
    fit_layout(fig)  # titles wrapped, width capped, whoever built the figure
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    html = out / f"{name}.html"
    tmp = out / f".{name}.html.{os.getpid()}.tmp"
    fig.write_html(tmp, include_plotlyjs=True, full_html=True)
    os.replace(tmp, html)
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
