import dataclasses
import types

import pytest
import torch
from torch import nn

from reasonlens.icot import (
    ALL_STAGES,
    ImplicitCoT,
    MindReadingStudent,
    ThoughtEmulator,
    add_teacher_states,
    emulator_loss,
    generate_answers,
    parse_stage_steps,
    preset,
    run_stages,
    run_stages_parallel,
    stage_lanes,
    train_coupled,
    train_emulator,
    train_nocot,
    train_student,
    train_teacher,
)
from reasonlens.icot.stages import answer_digit_accuracy
from reasonlens.icot.states import teacher_states
from reasonlens.models import Transformer
from reasonlens.tasks import multiplication as M
from reasonlens.tasks.batch import Batch
from reasonlens.training import TrainConfig
from reasonlens.training.grid import Backend
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def splits():
    return M.make_splits((2, 2), n_train=128, n_valid=16, n_test=16, seed=0)


def model_cfg(splits, **kw):
    base = dict(d_vocab=M.D_VOCAB, n_ctx=splits["train"].max_len, d_model=16, d_head=8, d_mlp=32)
    return tiny_config(**{**base, **kw})


def tc(**kw):
    base = dict(steps=4, batch_size=8, lr=3e-3, warmup_steps=1, eval_every=2, progress=False, device="cpu")
    return TrainConfig(**{**base, **kw})


def assert_same_weights(a: nn.Module, b: nn.Module):
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), n


def test_each_stage_trains_saves_loads_and_caches(tmp_path, splits):
    teacher = Transformer(model_cfg(splits, seed=1))
    runs = {
        "nocot": (Transformer(model_cfg(splits)), lambda m, d: train_nocot(m, splits, tc(), d), Transformer),
        "teacher": (teacher, lambda m, d: train_teacher(m, splits, tc(), d), Transformer),
        "student": (MindReadingStudent(model_cfg(splits, seed=2), 16, 2),
                    lambda m, d: train_student(m, teacher, splits, tc(), d), MindReadingStudent),
        "emulator": (ThoughtEmulator(model_cfg(splits, seed=3), 16, 2),
                     lambda m, d: train_emulator(m, teacher, splits, tc(), d), ThoughtEmulator),
    }  # fmt: skip
    for stage, (module, fit, cls) in runs.items():
        before = {k: v.clone() for k, v in module.state_dict().items()}
        res = fit(module, tmp_path / stage)
        assert res.steps_done == 4 and set(res.metrics.split) >= {"valid", "train_batch"}, stage
        assert any(not torch.equal(before[k], v) for k, v in module.state_dict().items()), stage
        loaded = cls.load(tmp_path / stage / "model.safetensors")
        assert_same_weights(module, loaded)
        # a second call is a no-op that restores the trained weights into a fresh module
        fresh = cls.load(tmp_path / stage / "model.safetensors")
        with torch.no_grad():
            for p in fresh.parameters():
                p.zero_()
        mtime = (tmp_path / stage / "state.safetensors").stat().st_mtime_ns
        again = fit(fresh, tmp_path / stage)
        assert again.steps_done == 4 and (tmp_path / stage / "state.safetensors").stat().st_mtime_ns == mtime
        assert_same_weights(module, fresh)

    student, emulator = runs["student"][0], runs["emulator"][0]
    coupled = ImplicitCoT(emulator, student)
    before = {k: v.clone() for k, v in coupled.state_dict().items()}
    train_coupled(coupled, splits, tc(), tmp_path / "coupled")
    changed = {k.split(".")[0] for k, v in coupled.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == {"emulator", "student"}  # the answer loss reaches both
    assert_same_weights(coupled, ImplicitCoT.load(tmp_path / "coupled" / "model.safetensors"))


def test_the_emulator_loss_is_half_the_squared_error_summed_over_layers(splits):
    teacher = Transformer(model_cfg(splits, seed=1))
    emulator = ThoughtEmulator(model_cfg(splits, seed=3), 16, 2)
    batch = add_teacher_states(splits["valid"].batch("input", teacher=True), teacher)
    want = teacher_states(teacher, splits["valid"].tokens_cot, splits["valid"].sep1, splits["valid"].sep2)
    torch.testing.assert_close(batch.extra["teacher_states"], want)
    pred = emulator(batch.inputs, batch.extra["sep"])
    manual = sum(0.5 * (want[:, layer] - pred[:, layer]).pow(2).sum(-1) for layer in range(2)).mean()
    torch.testing.assert_close(emulator_loss(emulator, batch), manual)
    with pytest.raises(ValueError, match=r"no extra\['teacher_tokens'\]"):
        add_teacher_states(splits["valid"].batch("input"), teacher)


def test_stages_refuse_a_mismatched_teacher(splits):
    teacher = Transformer(model_cfg(splits, n_layers=3))
    with pytest.raises(ValueError, match="expects a teacher with 2 layers and d_model=16"):
        train_student(MindReadingStudent(model_cfg(splits), 16, 2), teacher, splits, tc())


class Oracle(nn.Module):
    """Predicts the true continuation of every prompt, except for the rows listed in ``wrong``,
    whose last answer digit it gets wrong."""

    def __init__(self, data, fmt, wrong=()):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        tokens = data.tokens_cot if fmt == "cot" else data.tokens_nocot
        lengths = data.len_cot if fmt == "cot" else data.len_nocot
        self.cfg = types.SimpleNamespace(n_ctx=tokens.shape[1])
        self.seqs = {}
        for i in range(len(data)):
            seq = tokens[i, : lengths[i]].tolist()
            if i in wrong:
                seq[-2] = M.DIGIT0 + (seq[-2] - M.DIGIT0 + 1) % 10
            self.seqs[tuple(seq[: int(data.sep1[i]) + 1])] = seq

    def forward(self, tokens):
        B, T = tokens.shape
        logits = torch.zeros(B, T, M.D_VOCAB)
        for b in range(B):
            row = tokens[b].tolist()
            seq = self.seqs[tuple(row[: row.index(M.SEP) + 1])]
            for t in range(T):
                logits[b, t, seq[t + 1] if t + 1 < len(seq) else M.END] = 1.0
        return logits


@pytest.mark.parametrize("method, fmt", [("nocot", "nocot"), ("cot", "cot")])
def test_generation_grades_exact_answers(splits, method, fmt):
    data = splits["test"]
    res = generate_answers(method, Oracle(data, fmt, wrong={3, 7}), data, batch_size=5, keep_outputs=True)
    assert res.correct.tolist() == [i not in (3, 7) for i in range(len(data))]
    assert res.accuracy == pytest.approx(14 / 16) and res.tokens_generated > 0 and res.seconds > 0
    assert res.digit_accuracy == pytest.approx(1 - 2 / (16 * 4))  # one wrong digit of four, twice
    assert res.digit_accuracy_by_position == pytest.approx([1, 1, 1, 14 / 16])  # the last digit, twice
    want = M.decode(data.tokens_cot[0, data.sep1[0] + 1 : data.len_cot[0]]) if fmt == "cot" else None
    if want is not None:
        assert res.outputs[0] == want


def test_teacher_forced_accuracy_of_each_answer_digit(splits):
    data = splits["test"]
    oracle = Oracle(data, "nocot", wrong={3, 7})
    acc = answer_digit_accuracy(oracle, data.batch("nocot"), lambda m, b: m(b.inputs), batch_size=5)
    assert acc.tolist() == pytest.approx([1, 1, 1, 14 / 16])
    with pytest.raises(ValueError, match="extra\\['sep'\\]"):
        b = data.batch("nocot")
        answer_digit_accuracy(oracle, Batch(b.inputs, b.targets, b.mask), lambda m, b: m(b.inputs))


def test_implicit_decoding_matches_the_coupled_forward_pass(splits):
    data = splits["test"]
    emulator = ThoughtEmulator(model_cfg(splits, seed=3, n_ctx=data.tokens_nocot.shape[1]), 16, 2)
    student = MindReadingStudent(model_cfg(splits, seed=2, n_ctx=data.tokens_nocot.shape[1]), 16, 2)
    coupled = ImplicitCoT(emulator, student).eval()
    res = generate_answers("implicit", coupled, data, batch_size=6, keep_outputs=True)
    for i in range(len(data)):
        s = int(data.sep1[i])
        seq = torch.tensor(M.encode(M.decode(data.tokens_nocot[i, : s + 1]) + " " + res.outputs[i]))
        logits = coupled(seq[None], torch.tensor([s]))[0]
        assert logits[s:-1].argmax(-1).tolist() == seq[s + 1 :].tolist(), i
    with pytest.raises(ValueError, match="method 'implicit' needs an ImplicitCoT model"):
        generate_answers("implicit", student, data)


def test_run_stages_in_order_and_from_cache(tmp_path):
    setup = preset("cpu", (2, 2), quick=True).with_progress(False)
    setup = setup.with_device("cpu")
    logs = []
    first = run_stages(setup, run_dir=tmp_path, log=logs.append)
    assert list(first.results) == list(ALL_STAGES)
    assert len(logs) == len(ALL_STAGES)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(setup.stage_keys().values())
    assert (tmp_path / setup.stage_keys()["coupled"] / "stage.json").exists()
    summary = first.stage_summary()
    assert list(summary.stage) == list(first.results)
    assert dict(zip(summary.stage, summary.steps)) == {s: t.steps for s, t in setup.training.items()}
    second = run_stages(setup, run_dir=tmp_path, log=logs.append)
    for name in first.models:
        assert_same_weights(first.models[name], second.models[name])
    # the emulator of stage 4 is kept apart from the coupled one
    assert first.models["coupled"].emulator is not first.models["emulator"]


def test_run_stages_trains_only_the_stages_asked_for_and_what_they_read(tmp_path):
    setup = preset("cpu", (2, 2), quick=True).with_progress(False).with_device("cpu")
    assert setup.needed_stages(["coupled"]) == ["teacher", "student", "emulator", "coupled"]
    assert setup.needed_stages(["aux", "nocot"]) == ["nocot", "aux"]
    assert setup.needed_stages(["internalize"]) == ["internalize"]
    from_teacher = dataclasses.replace(setup, si_init="teacher")
    assert from_teacher.needed_stages(["internalize"]) == ["teacher", "internalize"]
    run = run_stages(from_teacher, run_dir=tmp_path, log=lambda *_: None, stages=["internalize"])
    assert list(run.results) == ["teacher", "internalize"]
    # started from the teacher: its weights moved away from the teacher's, not from a fresh init
    (si, *_), (te, *_) = run.models["internalize"].parameters(), run.models["teacher"].parameters()
    assert si.shape == te.shape and not torch.equal(si, te)
    assert (si - te).abs().max() < 0.5  # a few small steps away from the teacher
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['magic'\]"):
        setup.needed_stages(["magic"])


def test_stage_lanes_are_the_independent_chains_longest_first():
    setup = preset("cpu", (3, 3))
    lanes = stage_lanes(setup)
    assert sorted(map(tuple, lanes)) == sorted(
        [("nocot",), ("teacher", "student", "emulator", "coupled"), ("internalize",), ("aux",)]
    )
    assert lanes[0] == ["internalize"]  # 7.9k steps x 4 layers x 41 positions: the costliest, first
    assert lanes[-1] == ["nocot"]  # 1.5k steps x 4 layers x 16 positions: the cheapest, last
    # a stage that reads from another joins its lane
    from_teacher = dataclasses.replace(setup, si_init="teacher")
    lanes = stage_lanes(from_teacher, ["internalize", "nocot"])
    assert sorted(map(tuple, lanes)) == [("nocot",), ("teacher", "internalize")]
    assert stage_lanes(setup, ["coupled"]) == [["teacher", "student", "emulator", "coupled"]]


def test_parallel_lanes_train_the_same_weights_as_one_process(tmp_path):
    setup = preset("cpu", (2, 2), quick=True).with_progress(False).with_device("cpu")
    stages = ["nocot", "aux", "internalize"]
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' thread count, so the sums run in the same order
    try:
        serial = run_stages(setup, run_dir=tmp_path / "serial", log=lambda *_: None, stages=stages)
    finally:
        torch.set_num_threads(before)
    logs = []
    parallel = run_stages_parallel(
        setup, serial.splits, tmp_path / "parallel", Backend(workers=2, threads=1), log=logs.append,
        stages=stages, progress=False,
    )  # fmt: skip
    assert "3 independent lanes on 2 local workers" in logs[0]
    assert sorted(parallel.results) == sorted(stages)
    for name in stages:
        assert_same_weights(serial.models[name], parallel.models[name])
        assert parallel.results[name].steps_done == setup.training[name].steps
        assert parallel.results[name].wall_time > 0  # the workers' training time, read back


def test_setups_validate_and_key_only_on_what_changes_the_weights():
    setup = preset("cpu", (4, 4))
    keys = setup.stage_keys()
    assert keys == preset("cpu", (4, 4)).with_device("cpu").with_progress(False).stage_keys()
    assert keys["teacher"].startswith("teacher-") and len(set(keys.values())) == len(ALL_STAGES)
    for other in (preset("cpu", (4, 4), seed=1), preset("cpu", (5, 5))):
        assert not set(other.stage_keys().values()) & set(keys.values())
    # a stage's key moves with its own settings and with the stages it reads, and nothing else
    longer = dict(setup.training, coupled=dataclasses.replace(setup.training["coupled"], steps=3000))
    changed = {s for s, k in dataclasses.replace(setup, training=longer).stage_keys().items() if keys[s] != k}
    assert changed == {"coupled"}
    wider = dict(setup.models, teacher=setup.models["teacher"].replace(d_mlp=256))
    changed = {s for s, k in dataclasses.replace(setup, models=wider).stage_keys().items() if keys[s] != k}
    assert changed == {"teacher", "student", "emulator", "coupled"}
    # the method settings move only their own stage's key
    for change in (dict(si_lambda=2.0), dict(aux_weight=0.5)):
        moved = {s for s, k in dataclasses.replace(setup, **change).stage_keys().items() if keys[s] != k}
        assert moved == ({"internalize"} if "si_lambda" in change else {"aux"})
    with pytest.raises(ValueError, match="si_dwell has 3 entries; a 4x4 chain of thought has 46 tokens"):
        dataclasses.replace(setup, si_dwell=(1, 1, 1))
    with pytest.raises(ValueError, match="si_init must be one of"):
        dataclasses.replace(setup, si_init="teachr")
    assert setup.models["teacher"].n_ctx == 67 and setup.models["nocot"].n_ctx == 20
    paper = preset("paper", (4, 4))
    assert (paper.models["teacher"].n_layers, paper.models["teacher"].d_model) == (12, 768)
    assert paper.training["teacher"].batch_size == 32 and paper.n_train == 808_000
    with pytest.raises(ValueError, match="preset must be one of"):
        preset("gpu")
    bad = dict(setup.models, student=setup.models["student"].replace(n_layers=3))
    with pytest.raises(ValueError, match="the student has 3 layers but the teacher has 4"):
        dataclasses.replace(setup, models=bad)
    short = dict(setup.models, teacher=setup.models["teacher"].replace(n_ctx=40))
    with pytest.raises(ValueError, match="teacher's n_ctx=40 is shorter than its 67-token 4x4 sequences"):
        dataclasses.replace(setup, models=short)


def test_with_steps_changes_only_the_named_stages_and_their_readers():
    setup = preset("cpu", (4, 4))
    keys = setup.stage_keys()
    longer = setup.with_steps({"student": 2400})
    assert longer.training["student"].steps == 2400
    assert {s: t.steps for s, t in longer.training.items() if s != "student"} == {
        s: t.steps for s, t in setup.training.items() if s != "student"
    }
    changed = {s for s, k in longer.stage_keys().items() if keys[s] != k}
    assert changed == {"student", "coupled"}
    assert setup.with_steps({}).stage_keys() == keys
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['studnet'\]"):
        setup.with_steps({"studnet": 10})
    with pytest.raises(ValueError, match="stage 'teacher' must be a positive integer; got 0"):
        setup.with_steps({"teacher": 0})


def test_with_kd_shape_reshapes_the_distillation_chain_only(tmp_path):
    setup = preset("cpu", (3, 3))
    deep = setup.with_kd_shape(12, 64)
    for name in ("teacher", "student", "emulator"):
        m = deep.models[name]
        assert (m.n_layers, m.d_model, m.n_heads, m.d_mlp) == (12, 64, 4, 256)
    for name in ("nocot", "internalize", "aux"):
        assert deep.models[name] == setup.models[name]
    changed = {s for s, k in deep.stage_keys().items() if setup.stage_keys()[s] != k}
    assert changed == {"teacher", "student", "emulator", "coupled"}
    assert setup.with_kd_shape(3, 48).models["teacher"].n_heads == 4  # 48 / 4 = 12 per head
    assert setup.with_kd_shape(3, 30).models["teacher"].n_heads == 1  # 4 does not divide 30: heads of ~32
    with pytest.raises(ValueError, match="n_layers must be a positive integer; got 0"):
        setup.with_kd_shape(0, 64)
    # the deep chain trains end to end (tiny widths, a few steps): one teacher state per block
    quick = preset("cpu", (2, 2), quick=True).with_progress(False).with_device("cpu").with_kd_shape(5, 16)
    run = run_stages(quick, run_dir=tmp_path, stages=["coupled"])
    assert run.models["coupled"].student.cfg.n_layers == 5
    assert len(run.models["student"].mlps) == 5


def test_parse_stage_steps():
    assert parse_stage_steps(None) == {}
    assert parse_stage_steps(["student=2400", "coupled=30"]) == {"student": 2400, "coupled": 30}
    for bad, message in [
        ("student", "expected STAGE=N"),
        ("pupil=3", "expected STAGE=N"),
        ("student=many", "'many' is not an integer"),
        ("student=0", "steps must be >= 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_stage_steps([bad])
