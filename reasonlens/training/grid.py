"""One executor for a list of independent runs: serially, in local worker processes, or on Ray.

:func:`run_tasks` calls ``fn(item)`` for every item and returns the results by name, with the
failures (name -> error line) kept apart so that one failed run never stops the others. Backends:

- ``workers=1`` (and no ``ray``): in this process, one after another (today's serial path);
- ``workers=N``: N spawned worker processes on this machine, each run limited to
  ``threads`` torch threads (default ``cores // N``);
- ``ray=ADDRESS``: one Ray task per run, each asking for 1 CPU, or ``gpu_fraction`` of a GPU;
  ``ray=""`` starts a local Ray instance, ``"auto"`` or ``"ray://host:port"`` joins a cluster.

Every backend sets the same thread count in every run, so a grid gives the same numbers whatever
the backend. One progress bar counts done / running / failed; runs inside workers print nothing.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from reasonlens.cli import (
    add_backend_options,  # noqa: F401 - re-exported for the scripts
    usable_cores,
)


@dataclass(frozen=True)
class Backend:
    """How a grid is executed: ``workers`` local processes, or Ray at ``ray`` (None: not Ray)."""

    workers: int = 1
    ray: str | None = None
    threads: int | None = None  # torch threads per run (None: cores // workers, 1 on Ray)
    gpu_fraction: float | None = None  # Ray only: the share of one GPU each run asks for

    def __post_init__(self) -> None:
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers must be a positive integer; got {self.workers!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be a positive integer or None; got {self.threads!r}")
        if self.gpu_fraction is not None and not 0 < self.gpu_fraction <= 1:
            raise ValueError(f"gpu_fraction must be in (0, 1]; got {self.gpu_fraction!r}")

    def run_threads(self) -> int:
        if self.threads is not None:
            return self.threads
        if self.ray is not None:
            return 1
        return max(1, usable_cores() // self.workers)

    def describe(self) -> str:
        if self.ray is not None:
            return f"ray ({self.ray or 'local'})"
        return "serial" if self.workers == 1 else f"{self.workers} local workers"


def default_workers() -> int:
    return usable_cores()


def _call(fn: Callable[[Any], Any], item: Any, threads: int) -> Any:
    import torch

    torch.set_num_threads(threads)
    return fn(item)


def _error_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".splitlines()[0]


def run_tasks(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    names: Sequence[str],
    backend: Backend = Backend(),
    progress: bool = True,
    on_done: Callable[[str, Any], None] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Call ``fn(item)`` for every item; return ``(results, failures)`` keyed by name.

    ``fn`` must be a module-level function (it is pickled to the workers). ``on_done(name, result)``
    is called in this process, as each run finishes, in completion order. A run that raises (or
    whose worker process dies) is reported in ``failures`` as one line; the other runs still finish.
    """
    if len(items) != len(names):
        raise ValueError(f"run_tasks: {len(items)} items but {len(names)} names")
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique; got duplicates in {list(names)}")
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    running: set[str] = set()
    bar = tqdm(
        total=len(items), desc=f"grid [{backend.describe()}]", disable=not progress, dynamic_ncols=True
    )

    def update() -> None:
        bar.set_postfix_str(
            f"done={len(results)} running={len(running)} failed={len(failures)}"
            + (f" [{', '.join(sorted(running))}]" if running else ""),
            refresh=True,
        )

    def finish(name: str, result: Any = None, error: BaseException | str | None = None) -> None:
        running.discard(name)
        if error is not None:
            failures[name] = error if isinstance(error, str) else _error_line(error)
            if progress:  # without a bar, the failures are printed once at the end
                bar.write(f"run {name} failed: {failures[name]}")
        else:
            results[name] = result
            if on_done is not None:
                on_done(name, result)
        bar.update(1)
        update()

    threads = backend.run_threads()
    try:
        if backend.ray is not None:
            _run_ray(fn, items, names, backend, threads, running, update, finish)
        elif backend.workers == 1:
            import torch

            before = torch.get_num_threads()
            try:
                for name, item in zip(names, items):
                    running.add(name)
                    update()
                    try:
                        result = _call(fn, item, threads)
                    except Exception as err:  # noqa: BLE001 - reported by name, the others go on
                        finish(name, error=err)
                    else:
                        finish(name, result)
            finally:
                torch.set_num_threads(before)
        else:
            _run_pool(fn, list(zip(names, items)), backend, threads, running, update, finish)
    finally:
        bar.close()
    for name, err in failures.items():
        if not progress:
            print(f"run {name} failed: {err}", flush=True)
    return results, failures


_starts: Any = None  # in a pool worker: the queue on which it announces (run name, pid)


def _init_worker(starts: Any) -> None:
    global _starts
    _starts = starts


def _pool_call(fn: Callable[[Any], Any], item: Any, threads: int, name: str) -> Any:
    if _starts is not None:
        _starts.put((name, os.getpid()))
    return _call(fn, item, threads)


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def _run_pool(fn, todo, backend, threads, running, update, finish) -> None:  # noqa: ANN001
    """Local worker processes. A worker that dies (SIGKILL, the out-of-memory killer, a crash)
    breaks a ``ProcessPoolExecutor`` for every run in it: the run whose worker died is reported
    failed by name; the others (stopped with it, or not started) go on in a fresh pool, resuming
    from their checkpoints."""
    ctx = mp.get_context("spawn")  # no fork of a process holding torch threads
    while todo:
        todo = _pool_round(ctx, fn, todo, backend, threads, running, update, finish)


def _pool_round(ctx, fn, todo, backend, threads, running, update, finish) -> list:  # noqa: ANN001
    """One pool over ``todo`` (name, item) pairs; returns the pairs to run again if the pool broke."""
    starts = ctx.SimpleQueue()
    started: dict[str, int] = {}  # run name -> pid of the worker that took it

    def drain() -> None:
        while not starts.empty():
            name, pid = starts.get()
            started[name] = pid
            running.add(name)

    items = dict(todo)
    broken: list[str] = []
    workers = min(backend.workers, len(todo))
    with cf.ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(starts,)
    ) as pool:
        futures = {pool.submit(_pool_call, fn, item, threads, name): name for name, item in todo}
        # the worker processes, for their exit codes once the pool is down (a private attribute:
        # without it a dead worker's run cannot be told from the runs stopped with it)
        procs = dict(getattr(pool, "_processes", None) or {})
        pending = set(futures)
        while pending:
            done, pending = cf.wait(pending, timeout=1.0, return_when=cf.FIRST_COMPLETED)
            drain()
            for fut in done:
                name = futures[fut]
                try:
                    result = fut.result()
                except cf.process.BrokenProcessPool:
                    broken.append(name)
                except Exception as err:  # noqa: BLE001 - reported by name, the others go on
                    finish(name, error=err)
                else:
                    finish(name, result)
            update()
        procs.update(getattr(pool, "_processes", None) or {})
    drain()
    if not broken:
        return []
    # every worker is joined now: the one that died has its own exit code, the ones the executor
    # stopped after it have -SIGTERM
    codes = {pid: p.exitcode for pid, p in procs.items()}
    in_flight = [n for n in broken if n in started]
    dead = [n for n in in_flight if codes.get(started[n]) not in (0, None, -signal.SIGTERM)]
    if not dead:  # no worker to blame: fail what was running (or, if nothing was, everything)
        blamed = in_flight or broken
        for name in blamed:
            finish(name, error=f"a worker process died while {', '.join(blamed)} ran; rerun to resume")
        return [(n, items[n]) for n in broken if n not in blamed]
    for name in dead:
        finish(
            name,
            error=f"its worker process died ({_death(codes[started[name]])}: out of memory, or killed?); "
            "rerun to resume it",
        )
    for name in broken:
        if name not in dead:
            running.discard(name)
    update()
    return [(n, items[n]) for n in broken if n not in dead]


def _run_ray(fn, items, names, backend, threads, running, update, finish) -> None:  # noqa: ANN001
    try:
        import ray
    except ImportError as err:
        raise RuntimeError('--ray needs Ray: pip install -e ".[ray]"') from err
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=backend.ray or None,
            include_dashboard=False,
            log_to_driver=False,
            num_cpus=backend.workers if not backend.ray and backend.workers > 1 else None,
        )
    try:
        opts: dict[str, Any] = {"num_cpus": 1, "max_retries": 0}
        if backend.gpu_fraction is not None:
            opts["num_gpus"] = backend.gpu_fraction
        remote = ray.remote(**opts)(_call)
        refs = {remote.remote(fn, item, threads): name for name, item in zip(names, items)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            running.clear()
            for ref in done:
                name = refs[ref]
                try:
                    result = ray.get(ref)
                except Exception as err:  # noqa: BLE001
                    cause = getattr(err, "cause", None) or err
                    finish(name, error=cause if isinstance(cause, BaseException) else str(cause))
                else:
                    finish(name, result)
            update()
    finally:
        if started_here:
            ray.shutdown()


def backend_from_args(args: Any, n_runs: int | None = None) -> Backend:
    """The :class:`Backend` a grid script's ``--workers``/``--ray``/``--device`` flags ask for."""
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1; got {args.workers}")
    if not (0 < args.gpu_fraction <= 1):
        raise ValueError(f"--gpu-fraction must be in (0, 1]; got {args.gpu_fraction}")
    workers = args.workers or default_workers()
    if n_runs is not None and args.ray is None:
        workers = max(1, min(workers, n_runs))
    cuda = str(getattr(args, "device", "cpu")).startswith("cuda")
    return Backend(
        workers=workers,
        ray=args.ray,
        gpu_fraction=args.gpu_fraction if (args.ray is not None and cuda) else None,
    )
