"""Choosing fp32 or bf16 by measured step times (the timer is injected, so no timing is asserted)."""

import itertools

import pytest
import torch

from reasonlens.models import ModelConfig, Transformer
from reasonlens.tasks import matching
from reasonlens.training import StreamSource, TrainConfig
from reasonlens.training.matching_runs import MatchingRun, resolve_precision, stored_precision
from reasonlens.training.precision import choose_precision, seconds_per_step

CFG = ModelConfig(n_layers=1, d_model=8, d_mlp=8, n_ctx=13, d_vocab=matching.vocab_size("single_chain", 13))


def ticking(deltas):
    """A fake clock advancing by the given amounts, one per call, then by 1."""
    now = [0.0]
    it = itertools.chain(deltas, itertools.repeat(1.0))

    def timer():
        now[0] += next(it)
        return now[0]

    return timer


@pytest.mark.parametrize(
    "fp32, bf16, expected", [(0.3, 0.2, "bf16"), (0.17, 0.29, "fp32"), (0.2, 0.2, "fp32")]
)
def test_auto_takes_the_faster_measurement(fp32, bf16, expected):
    choice = choose_precision("auto", {"fp32": fp32, "bf16": bf16}.__getitem__)
    assert choice.precision == expected and choice.bf16 == (expected == "bf16")
    assert choice.seconds_per_step == {"fp32": fp32, "bf16": bf16}
    assert expected in choice.describe() and "s/step" in choice.describe()


def test_explicit_precision_measures_nothing():
    def measure(p):
        raise AssertionError("no measurement when the precision is given")

    assert choose_precision("bf16", measure).precision == "bf16"
    assert choose_precision("fp32", measure).precision == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        choose_precision("fp16", measure)


def test_seconds_per_step_reads_the_gaps_between_batches():
    source = StreamSource(matching.batch_maker("train"), seed=0)
    cfg = TrainConfig(steps=1, batch_size=4, device="cpu", progress=False)
    # warmup 2 gaps (10, 10) dropped; measured gaps 1, 3, 2 -> median 2
    timer = ticking([0.0, 10.0, 10.0, 1.0, 3.0, 2.0])
    t = seconds_per_step(lambda: Transformer(CFG), source, cfg, bf16=False, steps=3, warmup=2, timer=timer)
    assert t == pytest.approx(2.0)


def make_runs():
    train = TrainConfig(steps=2, batch_size=4, device="cpu", progress=False)
    return [MatchingRun(name=f"r{i}", model=CFG.replace(seed=i), train=train, n_eval=10) for i in range(2)]


def test_resolve_precision_sets_every_run_and_the_label(tmp_path):
    # fp32 is timed first (5 batch requests for warmup 1 + 3 steps): its steps "take" 5 s, bf16's 1 s
    timer = ticking([5.0] * 5 + [1.0] * 5)
    runs, choice = resolve_precision(make_runs(), "auto", tmp_path, steps=3, warmup=1, timer=timer)
    assert choice.precision == "bf16" and choice.seconds_per_step["fp32"] > choice.seconds_per_step["bf16"]
    assert all(r.train.bf16 and r.labels["precision"] == "bf16" for r in runs)
    runs, choice = resolve_precision(make_runs(), "fp32", tmp_path)
    assert all(not r.train.bf16 and r.labels["precision"] == "fp32" for r in runs)


def test_auto_keeps_the_precision_of_started_runs(tmp_path):
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "run.json").write_text('{"fingerprint": {"train": {"bf16": true}}}')
    assert stored_precision(make_runs(), tmp_path) == "bf16"

    def timer():
        raise AssertionError("started runs are not re-timed")

    runs, choice = resolve_precision(make_runs(), "auto", tmp_path, timer=timer)
    assert choice.precision == "bf16" and all(r.train.bf16 for r in runs)


def test_timing_uses_the_runs_thread_count_and_restores_it(tmp_path):
    seen = []
    clock = ticking([1.0] * 100)

    def timer():
        seen.append(torch.get_num_threads())
        return clock()

    before = torch.get_num_threads()
    resolve_precision(make_runs(), "auto", tmp_path, steps=1, warmup=0, timer=timer, threads=1)
    assert set(seen) == {1} and torch.get_num_threads() == before
