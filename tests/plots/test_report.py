"""Figure pages share one plotly.min.js; report.html holds the question, configuration, headline,
every figure and CSV of a run; and, in a real headless Chromium, the pages load without errors and
draw every figure (the browser tests skip with the reason where there is no Chromium, and fail
under REASONLENS_REQUIRE_CHROMIUM=1)."""

import dataclasses

import pandas as pd
import plotly.graph_objects as go
import pytest
from plotly.subplots import make_subplots

import tests.experiments.report_check as rc
from reasonlens.io import write_csv, write_json
from reasonlens.plots import save_figure
from reasonlens.plots.common import fit_layout
from reasonlens.plots.icot import answer_attention_figure
from reasonlens.plots.report import report_files, write_report
from reasonlens.plots.save import PLOTLY_JS, plotly_bundle, read_figure_json


@dataclasses.dataclass
class Preset:
    steps: int = 40
    shape: tuple = (2, 3)


def two_panel(title="Accuracy by depth and steps"):
    fig = make_subplots(rows=1, cols=2, subplot_titles=["train ± sd", "test"])
    fig.add_scatter(x=[0, 1, 2], y=[0.1, 0.5, 0.9], name="post-LN g=1", row=1, col=1)
    fig.add_heatmap(z=[[0, 1], [1, 0]], row=1, col=2)
    return fig.update_layout(title=title, width=700)


@pytest.fixture
def run_dir(tmp_path, no_static_export):
    out = tmp_path / "run"
    written = save_figure(two_panel(), out, "accuracy") + save_figure(
        go.Figure(go.Bar(y=[3, 1])), out, "bars"
    )
    table = pd.DataFrame({"setting": ["a", "b"], "accuracy": [0.123456, 1.0]})
    written += [write_csv(table, out / "results.csv"), write_csv(table.head(1), out / "summary.csv")]
    written.append(write_json({"x": 1}, out / "summary.json"))
    return out, written, table


def test_figure_pages_share_one_bundle_and_keep_their_data(run_dir):
    out, written, _ = run_dir
    bundle = out / PLOTLY_JS
    assert bundle.read_text() == plotly_bundle()
    for page in (out / "accuracy.html", out / "bars.html"):
        assert page.stat().st_size < 100_000  # the data, not the 4.8 MB bundle
        assert f'<script src="{PLOTLY_JS}"></script>' in page.read_text()
    fig = read_figure_json(out / "bars.html")
    assert fig["data"][0]["type"] == "bar"
    assert read_figure_json(out / "accuracy.html")["data"][0]["name"] == "post-LN g=1"
    bundle.write_text("stale")  # another plotly version's bundle is replaced on the next save
    import reasonlens.plots.save as save

    save._bundle_checked.clear()
    save_figure(go.Figure(go.Bar(y=[1])), out, "again")
    assert bundle.read_text() == plotly_bundle()


def test_read_figure_json_refuses_other_pages(tmp_path):
    page = tmp_path / "plain.html"
    go.Figure().write_html(page, include_plotlyjs=False)
    with pytest.raises(ValueError, match="plain.html"):
        read_figure_json(page)


def test_report_files_sorts_what_a_run_wrote(run_dir):
    out, written, _ = run_dir
    parts = report_files([*written, out / "accuracy.png", out / "report.html"])
    assert [p.name for p in parts["figures"]] == ["accuracy.html", "bars.html"]
    assert [p.name for p in parts["csvs"]] == ["results.csv", "summary.csv"]
    assert [p.name for p in parts["files"]] == ["summary.json"]


def test_report_holds_question_config_headline_figures_and_csvs(run_dir):
    out, written, table = run_dir
    page = write_report(out, title="Depth vs steps", question="How many steps per pass?",
                        config={"seed": 3, "out": out, "depths": (2, 3), "preset": Preset()}, headline=table,
                        notes=["best: L=3, k=4"], **report_files(written))  # fmt: skip
    assert page == out / "report.html"
    text = page.read_text()
    assert text.count(plotly_bundle()[:300]) == 1  # inlined once
    for piece in ("How many steps per pass?", "best: L=3, k=4", "<th>depths</th><td>2, 3</td>", "0.1235",
                  "<summary>Preset</summary>", "&quot;steps&quot;: 40", 'href="results.csv"',
                  'href="summary.json"', "2 rows × 2 columns"):  # fmt: skip
        assert piece in text.replace("&#215;", "×"), piece
    order = [text.index(s) for s in ('id="question"', 'id="headline"', 'id="figures"', 'id="data"')]
    assert order == sorted(order)
    assert rc.check_static(page, figures=["accuracy", "bars"], csvs=["results.csv", "summary.csv"]) == [
        "accuracy", "bars"
    ]  # fmt: skip
    with pytest.raises(AssertionError, match="lacks the figures"):
        rc.check_static(page, figures=["heatmap"])


def test_report_refuses_missing_files_before_writing(run_dir):
    out, written, _ = run_dir
    with pytest.raises(ValueError, match="nothere.csv"):
        write_report(out, title="t", question="q", config={}, csvs=[out / "nothere.csv"])
    with pytest.raises(ValueError, match="ghost.html"):
        write_report(out, title="t", question="q", config={}, figures=["ghost"])
    assert not (out / "report.html").exists()


def test_panel_titles_wrap_to_their_panel_and_answer_attention_is_a_grid():
    fig = make_subplots(rows=1, cols=4, subplot_titles=["stepwise internalization, layer 3"] * 4)
    fit_layout(fig.update_layout(width=700, title="t"))
    assert all("<br>" in a.text for a in fig.layout.annotations)
    again = fit_layout(fig).to_dict()
    assert fit_layout(go.Figure(again)).to_dict() == again  # idempotent
    rows = [dict(method=m, layer=layer, head=0, answer_digit=k, operand=o, operand_digit=d, weight=0.1)
            for m, n_layers in (("no_cot", 4), ("aux_running_sum", 2)) for layer in range(n_layers)
            for k in range(3) for o in ("a", "b") for d in range(2)]  # fmt: skip
    fig = answer_attention_figure(pd.DataFrame(rows), "Attention to operand digits")
    assert len(fig.data) == 6 and fig.layout.width <= 1200
    assert [a.text for a in fig.layout.annotations] == [f"layer {i}" for i in (0, 1, 2, 3, 0, 1)]
    assert fig.layout.yaxis.title.text == "no CoT" and fig.layout.yaxis5.title.text == "running-sum loss"


def test_without_chromium_the_browser_test_skips_or_fails_when_required(monkeypatch):
    monkeypatch.setattr(rc, "find_chromium", lambda: None)
    monkeypatch.delenv(rc.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no Chrome/Chromium"):
        rc.require_chromium()
    monkeypatch.setenv(rc.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="REASONLENS_REQUIRE_CHROMIUM=1"):
        rc.require_chromium()


def test_figure_problems_on_the_saved_json():
    fig = go.Figure(go.Scatter(y=[1], name="setting=post-LN g=1")).update_layout(width=1400)
    fig.add_annotation(text="label=none", x=0, y=1, showarrow=False)
    assert rc.figure_problems(fig.to_plotly_json()) == [
        "width 1400 px > 1200", "raw facet label 'label=none'", "raw facet label 'setting=post-LN g=1'"
    ]  # fmt: skip
    fine = go.Figure(go.Scatter(y=[1], name="fixed a=1")).update_layout(width=1200)
    assert rc.figure_problems(fine.to_plotly_json()) == []


def test_plot_problems_finds_what_a_person_would_see():
    ok = dict(name="f", rendered=True, n_data=1, n_drawn=1, svg=[0, 0, 500, 400], legend=["none"],
              title=dict(text="t", box=[10, 10, 100, 30]), panel_titles=[])  # fmt: skip
    assert rc.plot_problems([ok]) == []
    cut = {**ok, "title": dict(text="long", box=[10, 10, 640, 30])}
    overlap = {
        **ok,
        "panel_titles": [dict(text="a", box=[0, 0, 100, 20]), dict(text="b", box=[50, 0, 150, 20])],
    }
    raw = {**ok, "legend": ["label=fixed a=1", "a=1"]}
    empty = {**ok, "n_drawn": 0}
    problems = rc.plot_problems([cut, overlap, raw, empty])
    assert [p.split(": ")[1].split(" ")[0] for p in problems] == ["title", "panel", "raw", "empty"]


# In a real browser.


def test_report_and_figure_pages_render_in_chromium(run_dir):
    rc.require_chromium()
    out, written, table = run_dir
    page = write_report(
        out, title="t", question="q", config={"seed": 0}, headline=table, **report_files(written)
    )
    plots = rc.check_in_browser(page, n_figures=2)
    assert [p["name"] for p in plots] == ["accuracy", "bars"] and all(p["n_drawn"] > 0 for p in plots)
    for name in ("accuracy", "bars"):  # each figure page alone, in a 560 px window
        rc.check_in_browser(out / f"{name}.html", width=560, n_figures=1)


def test_the_browser_check_catches_errors_and_empty_plots(run_dir, tmp_path):
    rc.require_chromium()
    out, _, _ = run_dir
    broken = out / "broken.html"
    broken.write_text(
        (out / "bars.html").read_text().replace("<body", "<script>undefinedCall()</script><body")
    )
    plots, errors = rc.open_page(broken)
    assert any("undefinedCall" in e for e in errors)
    save_figure(go.Figure(), out, "empty")
    plots, errors = rc.open_page(out / "empty.html")
    assert not errors and any("empty plot" in p for p in rc.plot_problems(plots))
    (out / PLOTLY_JS).unlink()  # a page whose plotly.js is missing shows the failure
    plots, errors = rc.open_page(out / "bars.html")
    assert errors or rc.plot_problems(plots)


def test_check_report_warns_without_chromium_and_fails_when_required(run_dir, monkeypatch):
    out, written, _ = run_dir
    write_report(out, title="t", question="q", config={}, **report_files(written))
    monkeypatch.setattr(rc, "find_chromium", lambda: None)
    monkeypatch.delenv(rc.REQUIRE_ENV, raising=False)
    with pytest.warns(UserWarning, match="not opened in a browser"):
        assert rc.check_report(out, ["accuracy"], ["results.csv"]) == ["accuracy", "bars"]
    monkeypatch.setenv(rc.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="REASONLENS_REQUIRE_CHROMIUM=1"):
        rc.check_report(out, ["accuracy"], ["results.csv"])
