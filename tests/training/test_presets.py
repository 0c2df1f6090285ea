"""The matching-grid presets: every preset builds valid runs, the names match the CLI, the module is light."""

import subprocess
import sys
from pathlib import Path

import pytest

from reasonlens import cli
from reasonlens.models import ModelConfig
from reasonlens.names import NOISES
from reasonlens.plots.interventions import parallel_bounds
from reasonlens.tasks import matching
from reasonlens.training.matching_runs import MatchingRun, grid_train_config, lr_std_note
from reasonlens.training.presets import (
    DEPTH_VS_STEPS_PRESETS,
    MATCHING_INIT_PRESETS,
    MATCHING_NOISE_PRESETS,
    GridPreset,
    MatchingInitPreset,
    k_range,
    task_seq_len,
)

ROOT = Path(__file__).resolve().parents[2]
ALL = {"matching_init": MATCHING_INIT_PRESETS, "matching_noise": MATCHING_NOISE_PRESETS}
ALL["depth_vs_steps"] = DEPTH_VS_STEPS_PRESETS


def grid_run(pr, name: str, **model) -> MatchingRun:  # noqa: ANN001
    """One run of a matching_init / matching_noise preset (Type 1, k=2, seq_len 13, as the scripts)."""
    cfg = ModelConfig(
        n_layers=pr.n_layers, n_heads=1, d_model=pr.d_model, d_head=pr.d_head, d_mlp=pr.d_mlp,
        d_vocab=201, n_ctx=13, init=pr.init, seed=pr.seeds[0], **model,
    )  # fmt: skip
    train = grid_train_config(pr, seed=pr.seeds[0], device="cpu", progress=False, desc=name)
    return MatchingRun(
        name=name, model=cfg, train=train, n_train=pr.n_train, n_eval=pr.n_eval,
        solved_patience=pr.solved_patience,
    )  # fmt: skip


@pytest.mark.parametrize("experiment", sorted(ALL))
def test_every_experiment_has_the_cli_presets_and_quick(experiment):
    choices = next(a.choices for a in cli.grid_parser("doc.")._actions if a.dest == "preset")
    assert set(ALL[experiment]) == {*choices, "quick"}


@pytest.mark.parametrize("experiment", sorted(ALL))
def test_presets_have_usable_budgets_and_distinct_seeds(experiment):
    for name, pr in ALL[experiment].items():
        assert 0 <= pr.warmup_steps < pr.steps and pr.eval_every <= pr.steps, name
        assert pr.solved_patience is None or pr.solved_patience >= 1, name
        assert pr.seeds and len(set(pr.seeds)) == len(pr.seeds), name
        assert pr.schedule in ("constant", "cosine") and 0 < pr.min_lr <= pr.lr, name
        if pr.schedule == "constant":
            assert pr.min_lr == pr.lr, name  # a constant schedule never decays to min_lr


@pytest.mark.parametrize("name", sorted(MATCHING_INIT_PRESETS))
def test_every_matching_init_cell_builds_a_valid_run(name):
    pr = MATCHING_INIT_PRESETS[name]
    assert isinstance(pr, GridPreset) and pr.gammas and pr.norms
    for norm in pr.norms:
        for gamma in pr.gammas:
            grid_run(pr, f"{name}_{norm}_{gamma:g}", norm=norm, gamma=gamma)


@pytest.mark.parametrize("name", sorted(MATCHING_NOISE_PRESETS))
def test_every_matching_noise_cell_builds_a_valid_run(name):
    pr = MATCHING_NOISE_PRESETS[name]
    assert isinstance(pr, GridPreset) and pr.settings and pr.variants
    assert ("none", 0.0) in pr.variants  # the baseline every variant is compared with
    for norm, gamma in pr.settings:
        for noise, alpha in pr.variants:
            assert noise in NOISES
            grid_run(pr, f"{name}_{noise}", norm=norm, gamma=gamma, noise=noise, noise_alpha=alpha)


def test_cpu_main_job_lr_over_std_is_where_its_comment_says():
    """The cpu preset's comment: lr / init std 0.011 at gamma 0.5 (inside the teaching run's range)
    and 0.13 at gamma 1 (outside it)."""
    pr = MATCHING_INIT_PRESETS["cpu"]
    assert (pr.d_model, pr.lr, pr.steps, pr.gammas, pr.norms, pr.seeds) == (
        128, 1e-3, 4000, (0.5, 1.0), ("pre", "post"), (0, 1, 2),
    )  # fmt: skip
    note = lr_std_note([grid_run(pr, f"g{g:g}", norm="post", gamma=g) for g in pr.gammas])
    assert "gamma 0.5: 0.0113 (inside)" in note and "gamma 1: 0.128 (outside)" in note


def test_k_range_reaches_past_the_upper_bound_up_to_the_cap():
    assert parallel_bounds(3) == (3, 4)
    assert k_range(3, k_max=5, k_past=1) == [1, 2, 3, 4, 5]  # upper bound 4, one past it
    assert k_range(3, k_max=3, k_past=1) == [1, 2, 3]  # capped
    assert k_range(2, k_max=5, k_past=0) == [1]
    assert task_seq_len(3, margin=2) == 11  # 5 pairs and the query


@pytest.mark.parametrize("name", sorted(DEPTH_VS_STEPS_PRESETS))
def test_every_depth_vs_steps_task_is_valid(name):
    pr = DEPTH_VS_STEPS_PRESETS[name]
    for n_layers in pr.layers:
        ks = k_range(n_layers, pr.k_max, pr.k_past)
        assert ks[-1] > n_layers - 1 or ks[-1] == pr.k_max  # past the serial bound unless capped
        for k in ks:
            seq_len = task_seq_len(k, pr.margin)
            for order in ("random", "path_reverse"):
                matching.batch_maker("train", k, seq_len, "single_chain", pr.n_tokens, order)
    cpu = DEPTH_VS_STEPS_PRESETS["cpu"]
    assert (cpu.layers, cpu.k_max, cpu.margin, cpu.n_tokens) == ((2, 3), 5, 2, 50)


def test_presets_module_imports_only_the_standard_library():
    path = str(ROOT / "reasonlens" / "training" / "presets.py")
    probe = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('p', {path!r})\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['p'] = m; spec.loader.exec_module(m)\n"
        "print(m.MATCHING_INIT_PRESETS['cpu'].d_model, sorted(k for k in sys.modules if k.split('.')[0] in "
        "('torch', 'pandas', 'plotly', 'reasonlens')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "128 []"
    assert MatchingInitPreset.__module__ == "reasonlens.training.presets"
