"""Figures fit a 1200 px window: wrapped titles, capped widths, labels without ``name=`` prefixes,
colour scales covering the data, and an honest steps-to-99% panel."""

import re

import pandas as pd
import plotly.graph_objects as go

from reasonlens.models import ModelConfig
from reasonlens.plots.common import (
    MAX_WIDTH,
    fit_layout,
    model_identity,
    value_label,
    with_run_identity,
    wrap_title,
)
from reasonlens.plots.interventions import variant_comparison
from reasonlens.plots.patching import patching_figure
from reasonlens.plots.training import accuracy_vs_setting, learning_curves

LONG = "Linear probes at position 12: accuracy by depth (dotted: shuffled-label control)"


def test_wrap_title_breaks_at_word_boundaries_and_is_idempotent():
    wrapped = wrap_title(LONG, 560)
    lines = wrapped.split("<br>")
    assert len(lines) > 1 and " ".join(lines) == LONG  # no word cut, nothing lost
    assert all(len(line) <= (560 - 100) / (0.55 * 17) for line in lines)
    assert wrap_title(wrapped, 560) == wrapped
    assert wrap_title("short", 560) == "short"


def test_fit_layout_caps_width_and_makes_room_for_the_title():
    fig = go.Figure().update_layout(width=2400, title=LONG)
    fit_layout(fig)
    assert fig.layout.width == MAX_WIDTH and "<br>" not in fig.layout.title.text  # fits at 1200
    narrow = fit_layout(go.Figure().update_layout(width=560, title=LONG))
    n = narrow.layout.title.text.count("<br>") + 1
    assert n > 1 and narrow.layout.margin.t >= 40 + 24 * n


def test_value_label():
    assert value_label("label", "fixed a=1") == "fixed a=1"
    assert value_label("setting", "post-LN g=1") == "post-LN g=1"
    assert value_label("gamma", 0.5) == "gamma 0.5"


def curves():
    rows = []
    for setting in ("post-LN g=1", "pre-LN g=1"):
        for label in ("none", "fixed a=1"):
            for split in ("train", "test", "ood"):
                for step in (0, 10):
                    rows.append(dict(setting=setting, label=label, run=f"{setting}-{label}", split=split,
                                     metric="accuracy", step=step, value=step / 10))  # fmt: skip
    return pd.DataFrame(rows)


def test_legends_and_panel_titles_have_no_column_prefixes():
    fig = learning_curves(curves(), color="label", rows="setting")
    names = {t.name for t in fig.data}
    assert names == {"none", "fixed a=1"} and fig.layout.legend.title.text == "label"
    titles = [a.text for a in fig.layout.annotations]
    assert titles[0] == "post-LN g=1 · train distribution"
    assert not any(t.startswith(("setting=", "label=")) for t in titles)
    results = pd.DataFrame([dict(gamma=g, norm=n, run=f"{n}{g}", train_acc=1.0, test_acc=0.9, ood_acc=0.5)
                            for g in (0.5, 1.0) for n in ("pre", "post")])  # fmt: skip
    fig = accuracy_vs_setting(results)
    assert {t.name for t in fig.data if t.showlegend} == {"pre", "post"}
    assert not any(t.name.startswith("norm=") for t in fig.data)


def test_steps_to_99_panel_without_any_run_reaching_it():
    rows = [dict(setting="post-LN g=1", label=lab, seed=s, steps=1500, step_99=None, test_acc=0.3,
                 ood_acc=0.2) for lab in ("none", "fixed a=1") for s in (0, 1)]  # fmt: skip
    results = pd.DataFrame(rows)
    fig = variant_comparison(results)
    assert fig.layout.yaxis.title.text == "steps" and tuple(fig.layout.yaxis.range) == (0, 1.08 * 1500)
    notes = [a for a in fig.layout.annotations if a.text == "no run reached 99%"]
    assert len(notes) == 1 and notes[0].xref == "x domain"
    assert fig.layout.yaxis2.title.text == "accuracy"
    assert fig.layout.width <= MAX_WIDTH


def test_patching_colour_scale_covers_the_data():
    rows = [dict(model="m", counterfactual="child", hook=h, layer=0, position=p, score=s)
            for h in ("blocks.0.hook_resid_pre", "blocks.0.hook_resid_post")
            for p, s in ((0, -0.2), (1, 1.32))]  # fmt: skip
    heat = patching_figure(pd.DataFrame(rows)).data[0]
    assert heat.zmax >= 1.32 and heat.zmin == -heat.zmax
    rows = [{**r, "score": 0.5} for r in rows]
    heat = patching_figure(pd.DataFrame(rows)).data[0]
    assert (heat.zmin, heat.zmax) == (-1.0, 1.0)  # never narrower than [-1, 1]


def test_run_identity_lines_sit_under_the_title_and_are_replaced_not_stacked():
    cfg = ModelConfig(n_layers=3, d_model=128, n_heads=1, d_mlp=512, n_ctx=13, d_vocab=20, norm="post",
                      gamma=0.5, seed=1)  # fmt: skip
    line = model_identity(cfg, "runs/g0.5_post_s1/model.safetensors", "1a2b3c4d5e6f", steps=4000)
    assert line == (
        "runs/g0.5_post_s1/model.safetensors (sha256 1a2b3c4d): 3L d128 post-LN normal gamma 0.5 seed 1, "
        "4000 steps"
    )
    fig = go.Figure().update_layout(title="Probe accuracy by layer", width=560)
    with_run_identity(fig, [line, "large_init: another.safetensors"])
    text = fig.layout.title.text
    assert text.startswith("Probe accuracy by layer<br><sup>")
    assert "runs/g0.5_post_s1/model.safetensors" in text and "another.safetensors" in text
    # every wrapped piece of an identity line keeps its own <sup> (plotly does not carry tags over <br>)
    for piece in text.split("<br>")[1:]:
        assert piece.startswith("<sup>") and piece.endswith("</sup>"), piece
        assert len(re.sub(r"<[^>]*>", "", piece)) <= (560 - 100) / (0.55 * 17 * 0.7)
    with_run_identity(fig, ["only this one"])
    assert fig.layout.title.text == "Probe accuracy by layer<br><sup>only this one</sup>"
    assert fig.layout.margin.t >= 100  # room for the extra lines
