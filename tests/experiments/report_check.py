"""Checks of the pages a run writes (``report.html`` and the figure pages), for the tests.

:func:`check_report` is what the scripts' ``--quick`` tests call: the page exists, needs no
network, names every figure and CSV it should and links only to files that exist; and, in a real
headless Chromium, loads with no console error or exception and draws every figure (a plot with
data in it) with its titles inside the figure and its panel titles apart.

Chromium: Debian's ``chromium`` (or any Chrome choreographer finds). Where there is none, the
browser half is skipped with a warning (:func:`check_report`) or the test is skipped with the
reason (:func:`require_chromium`), except under ``REASONLENS_REQUIRE_CHROMIUM=1`` (set by
``.ci/run``), where both fail.
"""

from __future__ import annotations

import asyncio
import os
import re
import warnings
from html.parser import HTMLParser
from pathlib import Path

import pytest

from reasonlens.plots.save import read_figure_json

REQUIRE_ENV = "REASONLENS_REQUIRE_CHROMIUM"
PAGE_TIMEOUT_S = 60.0


def find_chromium() -> str | None:
    """The path of a Chrome/Chromium choreographer can drive, or ``None``."""
    try:
        from choreographer.browsers.chromium import Chromium

        path = Chromium.find_browser(skip_local=False)
    except Exception:  # noqa: BLE001 - any failure to look means "not there"
        return None
    return str(path) if path else None


def chromium_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") == "1"


NO_CHROMIUM = (
    "no Chrome/Chromium installed (apt-get install chromium), so report pages were not opened in a browser"
)


def require_chromium() -> str:
    """The browser's path; skips the calling test (fails it under REASONLENS_REQUIRE_CHROMIUM=1)."""
    path = find_chromium()
    if path is None:
        if chromium_required():
            pytest.fail(f"{REQUIRE_ENV}=1 but {NO_CHROMIUM}")
        pytest.skip(NO_CHROMIUM)
    return path


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.figures: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key):
                self.refs.append(a[key])
        if "rl-figure" in (a.get("class") or "").split():
            self.figures.append(a.get("data-name") or "")


def page_refs(path: Path) -> tuple[list[str], list[str]]:
    """(every src/href on the page, the figure names of its plot divs)."""
    parser = _Refs()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.refs, parser.figures


def check_static(page: Path, figures=(), csvs=()) -> list[str]:
    """File-level checks of a report page; returns its figure names in page order."""
    assert page.is_file(), f"{page} was not written"
    text = page.read_text(encoding="utf-8")
    from reasonlens.plots.save import plotly_bundle

    assert text.count(plotly_bundle()[:300]) <= 1, f"{page} inlines plotly.js more than once"
    refs, names = page_refs(page)
    remote = [r for r in refs if re.match(r"^(https?:)?//", r)]
    assert not remote, f"{page} loads {remote} over the network"
    for ref in refs:
        if ref.startswith("#"):
            continue
        assert (page.parent / ref).exists(), f"{page} links to {ref}, which does not exist"
    missing = [f for f in figures if f not in names]
    assert not missing, f"{page} lacks the figures {missing} (has {names})"
    linked = {Path(r).name for r in refs}
    missing = [Path(c).name for c in csvs if Path(c).name not in linked]
    assert not missing, f"{page} does not link the CSVs {missing}"
    for section in ("Question", "Configuration"):
        assert f">{section}</h2>" in text, f"{page} has no {section} section"
    for name in names:
        problems = figure_problems(read_figure_json(page.parent / f"{name}.html"))
        assert not problems, f"{page.parent / name}.html: " + "; ".join(problems)
    return names


RAW_FACET = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_]+=")  # plotly express's "column=value" labels


def figure_problems(fig: dict) -> list[str]:
    """What is wrong with a saved figure's JSON on its face: wider than a 1200 px window, or
    legend entries and annotations (panel titles) that carry a raw ``column=`` prefix."""
    from reasonlens.plots.common import MAX_WIDTH

    layout = fig.get("layout", {})
    problems = []
    if (layout.get("width") or 0) > MAX_WIDTH:
        problems.append(f"width {layout['width']} px > {MAX_WIDTH}")
    texts = [a.get("text") or "" for a in layout.get("annotations", [])]
    texts += [t.get("name") or "" for t in fig.get("data", []) if t.get("showlegend", True)]
    problems += [f"raw facet label {t!r}" for t in texts if RAW_FACET.match(t)]
    return problems


# Runs in the page: waits for every plot, then measures what a person would see.
_MEASURE = r"""
(async () => {
  const divs = [...document.querySelectorAll(".rl-figure, #figure")];
  const t0 = Date.now();
  while (divs.some(d => !d._fullLayout || !d.querySelector(".main-svg")) && Date.now() - t0 < 20000) {
    await new Promise(r => setTimeout(r, 50));
  }
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const box = el => { const b = el.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };
  return divs.map(d => {
    const svg = d.querySelector(".main-svg");
    const ann = (d.layout && d.layout.annotations) || [];
    const panelTitles = [];
    d.querySelectorAll("g.annotation").forEach(g => {
      const a = ann[+g.getAttribute("data-index")];
      if (a && a.yanchor === "bottom" && String(a.yref).endsWith("paper") && !a.showarrow) {
        const t = g.querySelector(".annotation-text-g") || g;
        panelTitles.push({text: a.text, box: box(t)});
      }
    });
    const title = d.querySelector(".gtitle");
    return {
      name: d.getAttribute("data-name") || document.title,
      rendered: !!svg, n_data: (d.data || []).length,
      n_drawn: d.querySelectorAll("g.trace, g.hm, .heatmaplayer image, .imagelayer image").length,
      svg: svg ? box(svg) : null, title: title ? {text: title.textContent, box: box(title)} : null,
      panel_titles: panelTitles,
      legend: [...d.querySelectorAll(".legendtext")].map(e => e.textContent),
    };
  });
})()
"""


async def _open(browser_path: str, url: str, width: int) -> tuple[list[dict], list[str]]:
    from choreographer import Browser

    errors: list[str] = []

    async def console(msg: dict) -> None:
        p = msg.get("params", {})
        if p.get("type") in ("error", "assert"):
            errors.append(
                "console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
            )

    async def exception(msg: dict) -> None:
        d = msg.get("params", {}).get("exceptionDetails", {})
        errors.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))

    async def log(msg: dict) -> None:
        e = msg.get("params", {}).get("entry", {})
        if e.get("level") == "error":
            errors.append(f"log: {e.get('text')} ({e.get('url', '')})")

    async with Browser(path=browser_path, headless=True) as browser:
        tab = await browser.create_tab("about:blank")
        await tab.send_command(
            "Emulation.setDeviceMetricsOverride",
            params={"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        )
        tab.subscribe("Runtime.consoleAPICalled", console)
        tab.subscribe("Runtime.exceptionThrown", exception)
        tab.subscribe("Log.entryAdded", log)
        for cmd in ("Runtime.enable", "Log.enable", "Page.enable"):
            await tab.send_command(cmd)
        loaded = tab.subscribe_once("Page.loadEventFired")
        await tab.send_command("Page.navigate", params={"url": url})
        await asyncio.wait_for(loaded, PAGE_TIMEOUT_S)
        res = await tab.send_command(
            "Runtime.evaluate", params={"expression": _MEASURE, "awaitPromise": True, "returnByValue": True}
        )
        result = res.get("result", {})
        if "exceptionDetails" in result:
            errors.append(f"measuring failed: {result['exceptionDetails']}")
            return [], errors
        await asyncio.sleep(0.2)  # late console messages
        return result.get("result", {}).get("value", []), errors


def open_page(page: Path, width: int = 1280, browser_path: str | None = None) -> tuple[list[dict], list[str]]:
    """Open ``page`` in headless Chromium at ``width`` px: (one measurement per plot, errors)."""
    path = browser_path or require_chromium()
    return asyncio.run(_open(path, page.resolve().as_uri(), width))


def _overlap(a: list[float], b: list[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def plot_problems(plots: list[dict], slack_px: float = 2.0) -> list[str]:
    """What a person would see wrong in the measured plots (an empty list when none)."""
    problems = []
    for p in plots:
        name = p["name"]
        if not p["rendered"]:
            problems.append(f"{name}: not drawn")
            continue
        if p["n_data"] == 0 or p["n_drawn"] == 0:
            problems.append(f"{name}: empty plot ({p['n_data']} traces, {p['n_drawn']} drawn)")
        left, right = p["svg"][0] - slack_px, p["svg"][2] + slack_px
        texts = ([p["title"]] if p["title"] else []) + p["panel_titles"]
        for t in texts:
            if t["box"][0] < left or t["box"][2] > right:
                problems.append(
                    f"{name}: title {t['text']!r} cut off (x {t['box'][0]:.0f}-{t['box'][2]:.0f})"
                )
        pts = p["panel_titles"]
        for i in range(len(pts)):
            for j in range(i + 1, len(pts)):
                if _overlap(pts[i]["box"], pts[j]["box"]) > 4.0:
                    problems.append(f"{name}: panel titles {pts[i]['text']!r} and {pts[j]['text']!r} overlap")
        for text in [t["text"] for t in pts] + p["legend"]:
            if RAW_FACET.match(text):
                problems.append(f"{name}: raw facet label {text!r}")
    return problems


def check_in_browser(page: Path, width: int = 1280, n_figures: int | None = None) -> list[dict]:
    """Open ``page``; assert no console errors and every plot drawn and readable."""
    plots, errors = open_page(page, width)
    assert not errors, f"{page}: errors in the browser:\n  " + "\n  ".join(errors)
    if n_figures is not None:
        assert len(plots) == n_figures, f"{page}: {len(plots)} plots drawn, expected {n_figures}"
    problems = plot_problems(plots)
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)
    return plots


def check_report(out_dir: str | os.PathLike, figures=(), csvs=(), browser: bool = True) -> list[str]:
    """Assert ``out_dir/report.html`` is complete: the named figures (stems) and CSVs (names or
    paths) on it, and (in Chromium, when there is one) every figure drawn without errors. Returns
    the page's figure names."""
    page = Path(out_dir) / "report.html"
    names = check_static(page, figures, csvs)
    if browser:
        if find_chromium() is None and not chromium_required():
            warnings.warn(f"{page}: {NO_CHROMIUM}", stacklevel=2)
        else:
            check_in_browser(page, n_figures=len(names))
    return names


def flat_title(page: Path) -> str:
    """A figure page's title without tags, line breaks or spaces: what to search for a file path
    that the title may have wrapped at a slash (compare with ``"".join(expected.split())``)."""
    from reasonlens.plots.save import read_figure_json

    title = read_figure_json(page)["layout"]["title"]["text"]
    return "".join(re.sub(r"<[^>]*>", " ", title).split())
