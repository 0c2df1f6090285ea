"""The grid executor: same numbers on every backend, failures reported by name, kill-and-resume."""

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from safetensors.torch import load_file

import reasonlens.training.matching_runs as mr
from reasonlens.training.grid import Backend, default_workers, run_tasks
from reasonlens.training.matching_runs import MatchingRun, grid_train_config, run_grid
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]


def tiny_grid(steps: int = 12) -> list[MatchingRun]:
    preset = SimpleNamespace(
        steps=steps, batch_size=16, lr=3e-3, warmup_steps=2, min_lr=3e-4, schedule="cosine",
        eval_every=4, bf16=False,
    )  # fmt: skip
    runs = []
    for seed in (0, 1):
        train = grid_train_config(preset, seed=seed, device="cpu", progress=False, desc=f"s{seed}")
        model = tiny_config(d_vocab=201, n_ctx=13, norm="post", seed=seed)
        runs.append(MatchingRun(name=f"s{seed}", model=model, train=train, n_eval=64, labels={"seed": seed}))
    return runs


def weights(out: Path, name: str) -> dict:
    return load_file(out / "runs" / name / "model.safetensors")


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_serial_workers_and_ray_give_identical_numbers(tmp_path):
    backends = {
        "serial": Backend(workers=1, threads=1),
        "workers": Backend(workers=2, threads=1),
        "ray": Backend(workers=2, ray="", threads=1),
    }
    out = {}
    for key, backend in backends.items():
        res, cur = run_grid(tiny_grid(), tmp_path / key, progress=False, backend=backend)
        out[key] = (res.drop(columns="wall_time_s"), cur)
    base_res, base_cur = out["serial"]
    assert list(base_res.run) == ["s0", "s1"]
    for key in ("workers", "ray"):
        pd.testing.assert_frame_equal(out[key][0], base_res, check_exact=True)
        pd.testing.assert_frame_equal(out[key][1], base_cur, check_exact=True)
        for name in ("s0", "s1"):
            assert same_weights(weights(tmp_path / key, name), weights(tmp_path / "serial", name)), (
                key,
                name,
            )
    # the two seeds really differ, so the equality above is not vacuous
    assert not same_weights(weights(tmp_path / "serial", "s0"), weights(tmp_path / "serial", "s1"))


def _maybe_fail(x: int) -> int:
    if x == 2:
        raise ValueError(f"bad item {x}")
    return x * 10


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failed_task_is_reported_by_name_and_the_others_finish(workers):
    results, failures = run_tasks(
        _maybe_fail, [1, 2, 3], ["a", "b", "c"], Backend(workers=workers, threads=1), progress=False
    )
    assert results == {"a": 10, "c": 30}
    assert failures == {"b": "ValueError: bad item 2"}


def test_run_grid_gathers_only_finished_runs_and_names_the_failed_one(tmp_path, monkeypatch):
    real = mr.execute

    def execute(run, out_dir, force=False):
        if run.name == "s0":
            raise RuntimeError("disk on fire")
        return real(run, out_dir, force=force)

    monkeypatch.setattr(mr, "execute", execute)
    with pytest.raises(mr.GridFailed, match=r"s0: RuntimeError: disk on fire") as info:
        run_grid(tiny_grid(), tmp_path, progress=False)
    assert info.value.failures == {"s0": "RuntimeError: disk on fire"}
    assert list(pd.read_csv(tmp_path / "results.csv").run) == ["s1"]
    assert set(pd.read_csv(tmp_path / "curves.csv").run) == {"s1"}


def test_bad_backend_settings_name_the_value():
    with pytest.raises(ValueError, match="workers must be a positive integer; got 0"):
        Backend(workers=0)
    with pytest.raises(ValueError, match="gpu_fraction must be in"):
        Backend(ray="", gpu_fraction=1.5)


def test_workers_and_threads_follow_the_cpu_affinity_not_the_machine(monkeypatch):
    # taskset -c 1 (or a cgroup cpuset) leaves one core: one worker of one thread, not os.cpu_count()
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1}, raising=False)
    assert default_workers() == 1
    assert Backend(workers=1).run_threads() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert default_workers() == 4
    assert Backend(workers=2).run_threads() == 2


KILLED_GRID = """
import os, signal, sys
import reasonlens.training.matching_runs as mr
from reasonlens.training.grid import Backend
from tests.training.test_grid import tiny_grid

class KilledAtStep10(mr.StreamSource):
    def __call__(self, step, batch_size):
        if step == 10:  # after the step-8 checkpoint: a real SIGKILL, nothing gets to clean up
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(step, batch_size)

mr.StreamSource = KilledAtStep10
mr.run_grid(tiny_grid(), sys.argv[1], progress=False, backend=Backend(workers=1, threads=1))
"""


def test_a_sigkilled_grid_resumes_to_the_same_final_weights(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    res, cur = run_grid(tiny_grid(), straight, progress=False, backend=Backend(workers=1, threads=1))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_GRID, str(killed)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    s0 = killed / "runs" / "s0"
    assert (s0 / "state.safetensors").exists() and not (s0 / "result.json").exists()
    assert not (killed / "results.csv").exists()  # nothing finished, nothing gathered
    res2, cur2 = run_grid(tiny_grid(), killed, progress=False, backend=Backend(workers=2, threads=1))
    for name in ("s0", "s1"):
        assert same_weights(weights(killed, name), weights(straight, name)), name
    pd.testing.assert_frame_equal(res2.drop(columns="wall_time_s"), res.drop(columns="wall_time_s"))
    # the running training-loss average (train_batch/loss) survived the resume too
    pd.testing.assert_frame_equal(cur2, cur, check_exact=True)


# Run as a script file (not -c): spawned pool workers re-import it as __mp_main__, so the patch
# below reaches them too.
KILLED_WORKER = """
import os, signal, sys
from reasonlens import cli
import reasonlens.training.matching_runs as mr
from reasonlens.training.grid import Backend
from tests.training.test_grid import tiny_grid

current = []
real_execute = mr.execute

def execute(run, out_dir, force=False):
    current[:] = [run.name]
    return real_execute(run, out_dir, force=force)

class KillsS0AtStep10(mr.StreamSource):
    def __call__(self, step, batch_size):
        if current == ["s0"] and step == 10 and os.environ.get("KILL_WORKER"):  # after the step-8 checkpoint
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(step, batch_size)

mr.StreamSource, mr.execute = KillsS0AtStep10, execute

def main(argv):
    mr.run_grid(tiny_grid(), argv[0], progress=False, backend=Backend(workers=2, threads=1))

if __name__ == "__main__":
    sys.exit(cli.run(main))
"""


def test_a_sigkilled_pool_worker_fails_its_run_by_name_and_the_rerun_resumes_it(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    res, cur = run_grid(tiny_grid(), straight, progress=False, backend=Backend(workers=1, threads=1))
    script = tmp_path / "killed_worker.py"
    script.write_text(KILLED_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "KILL_WORKER": "1"}
    env.pop("REASONLENS_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, str(script), str(killed)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    err = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(err) == 1, proc.stderr[-2000:]
    err = err[0]
    # only s0's worker died; s1, stopped with the broken pool, went on in a fresh pool and finished
    assert err.startswith("error: 1 of 2 run(s) failed (s0: its worker process died (killed by SIGKILL"), err
    assert "rerun the same command" in err
    assert list(pd.read_csv(killed / "results.csv").run) == ["s1"]
    s0 = killed / "runs" / "s0"
    assert (s0 / "state.safetensors").exists() and not (s0 / "result.json").exists()
    # the next invocation (no kill) resumes s0 from its checkpoint to the uninterrupted weights
    res2, cur2 = run_grid(tiny_grid(), killed, progress=False, backend=Backend(workers=1, threads=1))
    for name in ("s0", "s1"):
        assert same_weights(weights(killed, name), weights(straight, name)), name
    pd.testing.assert_frame_equal(res2.drop(columns="wall_time_s"), res.drop(columns="wall_time_s"))
    pd.testing.assert_frame_equal(cur2, cur, check_exact=True)
