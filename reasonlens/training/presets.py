"""Presets of the matching-grid experiments: model size, training budget and grid axes.

One frozen dataclass per experiment and one dict per experiment from preset name (``cpu``, the
default, measured on a 2-core machine; ``paper``, the authors' configuration or a GPU grid;
``quick``, a smoke run in seconds for the tests) to preset. The comment above each preset says how
its numbers were chosen (they document measurements: see the README's results). The scripts
(``experiments/matching_init.py``, ``experiments/matching_noise.py``,
``experiments/depth_vs_steps.py``) take a preset by name, apply their flags with
:func:`dataclasses.replace` and build the runs of :mod:`reasonlens.training.matching_runs`.

This module needs only the standard library. The scripts still import it after parsing their
arguments (the package ``reasonlens.training`` imports torch); their ``--preset`` choices come from
:func:`reasonlens.cli.grid_parser`, which lists the names every dict here has besides ``quick``.
"""

from __future__ import annotations

from dataclasses import dataclass

Setting = tuple[str, float]  # (norm, gamma)
Variant = tuple[str, float]  # (noise, alpha)


@dataclass(frozen=True)
class GridPreset:
    """Model size and budget shared by the presets of the matching-grid experiments
    (``experiments/matching_init.py``, ``experiments/matching_noise.py``); each experiment's preset
    subclasses it and adds the axes of its grid. ``n_train=None`` draws fresh examples every step."""

    d_model: int
    d_head: int
    d_mlp: int
    n_layers: int
    batch_size: int
    steps: int
    lr: float
    warmup_steps: int
    warmup_start_lr: float
    min_lr: float
    schedule: str
    eval_every: int
    n_eval: int
    n_train: int | None
    init: str
    seeds: tuple[int, ...]
    solved_patience: int | None
    bf16: bool


@dataclass(frozen=True)
class MatchingInitPreset(GridPreset):
    """Model size, budget (:class:`GridPreset`) and grid of one ``experiments/matching_init.py``
    preset (see MATCHING_INIT_PRESETS for the numbers and why)."""

    gammas: tuple[float, ...]
    norms: tuple[str, ...]


MATCHING_INIT_PRESETS: dict[str, MatchingInitPreset] = {
    # CPU defaults, chosen by measurement on a 2-core machine (README, "How the CPU defaults were
    # chosen"): the widest model whose grid fits a session; the lr and constant schedule under which
    # gamma=0.5 post-LN left its plateau fastest of those tried; 4000 steps, past the 2800-3900 at
    # which four seeds of that setting reached 99% test accuracy. A run stops early once test
    # accuracy has stayed >= 99% for 3 evaluations (300 steps). Large (0.5) vs small (1.0) init x
    # {pre, post} x three seeds: 12 runs. At lr 1e-3 the ratio lr/init std is 0.011 at gamma 0.5
    # (inside the teaching run's 0.006-0.023) and 0.13 at gamma 1 (outside it): see lr_std_note.
    "cpu": MatchingInitPreset(
        d_model=128,
        d_head=128,
        d_mlp=512,
        n_layers=3,
        batch_size=256,
        steps=4000,
        lr=1e-3,
        warmup_steps=200,
        warmup_start_lr=0.0,
        min_lr=1e-3,
        schedule="constant",
        eval_every=100,
        n_eval=2000,
        n_train=None,
        init="normal",
        gammas=(0.5, 1.0),
        norms=("pre", "post"),
        seeds=(0, 1, 2),
        solved_patience=3,
        bf16=True,
    ),
    # The authors' teaching configuration (papers.md): 3 layers, 1 head, d_model 400, d_head 64,
    # d_mlp 1200, uniform init +-(6/d_in)^gamma, batch 1000, AdamW wd 0.01, lr 5e-5 warmed to 2e-4
    # over 10 epochs then cosine to 2e-5, 270k training sequences, 100 epochs, clip 1, seed 1.
    "paper": MatchingInitPreset(
        d_model=400,
        d_head=64,
        d_mlp=1200,
        n_layers=3,
        batch_size=1000,
        steps=27_000,
        lr=2e-4,
        warmup_steps=2_700,
        warmup_start_lr=5e-5,
        min_lr=2e-5,
        schedule="cosine",
        eval_every=270,
        n_eval=15_000,
        n_train=270_000,
        init="uniform",
        gammas=(0.5, 1.0),
        norms=("pre", "post"),
        seeds=(1,),
        solved_patience=None,
        bf16=False,
    ),
    # A smoke run in seconds (used by the test suite).
    "quick": MatchingInitPreset(
        d_model=32,
        d_head=16,
        d_mlp=64,
        n_layers=3,
        batch_size=64,
        steps=30,
        lr=3e-3,
        warmup_steps=5,
        warmup_start_lr=0.0,
        min_lr=3e-4,
        schedule="cosine",
        eval_every=10,
        n_eval=200,
        n_train=None,
        init="normal",
        gammas=(0.5, 1.0),
        norms=("pre", "post"),
        seeds=(0,),
        solved_patience=None,
        bf16=False,
    ),
}


@dataclass(frozen=True)
class MatchingNoisePreset(GridPreset):
    """Model size, budget (:class:`GridPreset`) and grid of one ``experiments/matching_noise.py``
    preset (see MATCHING_NOISE_PRESETS for the numbers and why)."""

    settings: tuple[Setting, ...]
    variants: tuple[Variant, ...]


MATCHING_NOISE_PRESETS: dict[str, MatchingNoisePreset] = {
    # CPU defaults, measured on the shared 2-core machine (README "Results: orthogonal noise"):
    # post-LN at gamma 1 (normal init, std d_in^-1), the paper's small-init setting, where the plain
    # model did not leave its plateau in 8000 steps at d_model 128 (main job) nor in 2000 steps at
    # d_model 64 here. d_model 64 (~55 ms a step) so that 6 variants x 2 seeds x 1500 steps fit in
    # about 20 minutes; constant lr after warm-up; a run stops once test accuracy has stayed >= 99%
    # for 3 evaluations. More settings: --settings post:1 pre:1 or --settings-from.
    "cpu": MatchingNoisePreset(
        d_model=64,
        d_head=64,
        d_mlp=256,
        n_layers=3,
        batch_size=256,
        steps=1500,
        lr=1e-3,
        warmup_steps=200,
        warmup_start_lr=0.0,
        min_lr=1e-3,
        schedule="constant",
        eval_every=100,
        n_eval=1000,
        n_train=None,
        init="normal",
        settings=(("post", 1.0),),
        variants=(
            ("none", 0.0),
            ("fixed", 0.3),
            ("fixed", 1.0),
            ("fixed", 3.0),
            ("learned", 1.0),
            ("identity", 1.0),
        ),  # fmt: skip
        seeds=(0, 1),
        solved_patience=3,
        bf16=True,
    ),
    # The authors' teaching configuration (as in matching_init --preset paper), for a GPU.
    "paper": MatchingNoisePreset(
        d_model=400,
        d_head=64,
        d_mlp=1200,
        n_layers=3,
        batch_size=1000,
        steps=27_000,
        lr=2e-4,
        warmup_steps=2_700,
        warmup_start_lr=5e-5,
        min_lr=2e-5,
        schedule="cosine",
        eval_every=270,
        n_eval=15_000,
        n_train=270_000,
        init="uniform",
        settings=(("post", 1.0), ("pre", 1.0), ("pre", 0.5)),
        variants=(
            ("none", 0.0),
            ("fixed", 0.1),
            ("fixed", 0.3),
            ("fixed", 1.0),
            ("learned", 0.3),
            ("identity", 0.3),
        ),  # fmt: skip
        seeds=(1, 2, 3),
        solved_patience=None,
        bf16=False,
    ),
    # A smoke run in seconds (used by the test suite).
    "quick": MatchingNoisePreset(
        d_model=16,
        d_head=8,
        d_mlp=32,
        n_layers=3,
        batch_size=32,
        steps=12,
        lr=3e-3,
        warmup_steps=2,
        warmup_start_lr=0.0,
        min_lr=3e-3,
        schedule="constant",
        eval_every=6,
        n_eval=64,
        n_train=None,
        init="normal",
        settings=(("post", 1.0),),
        variants=(("none", 0.0), ("fixed", 1.0), ("learned", 1.0), ("identity", 1.0)),
        seeds=(0,),
        solved_patience=None,
        bf16=False,
    ),
}


@dataclass(frozen=True)
class DepthVsStepsPreset:
    """Grid, model and budget of one ``experiments/depth_vs_steps.py`` preset (see
    DEPTH_VS_STEPS_PRESETS for the numbers and why)."""

    layers: tuple[int, ...]
    k_max: int  # cap on k; each L runs k = 1 .. min(upper bound + k_past, k_max)
    k_past: int  # how many steps past the upper parallel bound
    orders: tuple[str, ...]
    seeds: tuple[int, ...]
    margin: int  # pairs beyond the k hops
    n_tokens: int
    d_model: int
    d_head: int
    n_heads: int
    d_mlp: int
    norm: str
    gamma: float
    init: str
    batch_size: int
    steps: int
    lr: float
    warmup_steps: int
    schedule: str
    min_lr: float
    eval_every: int
    n_eval: int
    solved_patience: int | None
    bf16: bool
    probe_examples: int
    probe_threshold: float


DEPTH_VS_STEPS_PRESETS: dict[str, DepthVsStepsPreset] = {
    # CPU defaults (README "Results: depth versus steps"): L in {2, 3} and k <= 5, so the 3-layer
    # row covers its serial line (2), both parallel bounds (3, 4) and one step past them (the
    # 3-layer experiment of Tian et al.); L = 4 and 5 need --layers / --k-max or --preset paper.
    # pre-LN, gamma 0.5, 50 tokens, 2 off-path pairs: measured here, a 3-layer model learned k = 3
    # in favourable order to 99% test accuracy in ~1800 steps (~50 ms a step on 2 busy cores), and
    # k = 2 in random order stayed on its plateau for 2000 steps.
    "cpu": DepthVsStepsPreset(
        layers=(2, 3),
        k_max=5,
        k_past=1,
        orders=("random", "favourable"),
        seeds=(0,),
        margin=2,
        n_tokens=50,
        d_model=64,
        d_head=64,
        n_heads=1,
        d_mlp=256,
        norm="pre",
        gamma=0.5,
        init="normal",
        batch_size=256,
        steps=2000,
        lr=2e-3,
        warmup_steps=100,
        schedule="constant",
        min_lr=2e-3,
        eval_every=200,
        n_eval=1000,
        solved_patience=2,
        bf16=True,
        probe_examples=4000,
        probe_threshold=0.9,
    ),
    # For a GPU: L = 2..5 with k up to one past each upper bound (2, 5, 14 and 41 steps), 3 seeds,
    # 4 off-path pairs per example (fewer slot layouts to memorise than with the CPU's 2; see the
    # README for what the favourable order let a 2-layer model do with 2). Not run here.
    "paper": DepthVsStepsPreset(
        layers=(2, 3, 4, 5),
        k_max=41,
        k_past=1,
        orders=("random", "favourable"),
        seeds=(0, 1, 2),
        margin=4,
        n_tokens=250,
        d_model=256,
        d_head=64,
        n_heads=4,
        d_mlp=1024,
        norm="pre",
        gamma=0.5,
        init="normal",
        batch_size=512,
        steps=20_000,
        lr=1e-3,
        warmup_steps=500,
        schedule="cosine",
        min_lr=1e-4,
        eval_every=250,
        n_eval=4000,
        solved_patience=4,
        bf16=True,
        probe_examples=20_000,
        probe_threshold=0.9,
    ),
    # A smoke run in seconds (used by the test suite).
    "quick": DepthVsStepsPreset(
        layers=(2, 3),
        k_max=3,
        k_past=1,
        orders=("random", "favourable"),
        seeds=(0,),
        margin=1,
        n_tokens=50,
        d_model=16,
        d_head=8,
        n_heads=2,
        d_mlp=32,
        norm="pre",
        gamma=0.5,
        init="normal",
        batch_size=32,
        steps=8,
        lr=3e-3,
        warmup_steps=2,
        schedule="constant",
        min_lr=3e-3,
        eval_every=4,
        n_eval=64,
        solved_patience=None,
        bf16=False,
        probe_examples=200,
        probe_threshold=0.0,  # so the analysis step runs on whatever the smoke models learned
    ),
}


def k_range(n_layers: int, k_max: int, k_past: int) -> list[int]:
    """k = 1 .. min(upper parallel bound + k_past, k_max)."""
    from reasonlens.plots.interventions import parallel_bounds  # here: plotly only when called

    return list(range(1, min(parallel_bounds(n_layers)[1] + k_past, k_max) + 1))


def task_seq_len(k: int, margin: int) -> int:
    """Sequence length of a depth_vs_steps example: k + ``margin`` pairs plus the query."""
    return 2 * (k + margin) + 1
