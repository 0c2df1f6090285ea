"""The command-line boundary every script under ``experiments/`` and ``benchmarks/`` shares.

- :func:`prepare` gives a parser ``--debug`` and one-line argument errors (``error: ...``, exit 2).
- The ``type=`` validators below reject ``inf``, ``nan``, zero or negative values and unusable
  ``--out`` folders while the arguments are parsed, before any work starts.
- :func:`run` calls a script's ``main`` and turns expected errors (bad values, missing or unreadable
  files, format and checkpoint errors, an absent CUDA device, a :class:`ReportedError` such as a
  grid some of whose runs failed) into one line ``error: ...`` and exit status 2; the traceback is
  printed only with ``--debug`` or ``REASONLENS_DEBUG=1``.

This module imports only the standard library, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DEBUG_ENV = "REASONLENS_DEBUG"
EXIT_ERROR = 2


class UsageError(ValueError):
    """A bad value the user gave; the message names it."""


class ReportedError(RuntimeError):
    """An expected failure whose message already says what happened and what to do (e.g. some runs
    of a grid failed: which, why, where the finished ones are); :func:`run` prints it as one line."""


def debug_enabled(argv: Sequence[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def fail(message: str) -> None:
    """Print ``error: message`` (one line) to stderr and exit with status 2."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(EXIT_ERROR)


def prepare(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--debug`` and make argument errors one line, ``error: ...``, exit 2."""
    parser.add_argument(
        "--debug", action="store_true", help=f"show tracebacks of errors (or set {DEBUG_ENV}=1)"
    )
    parser.error = fail  # type: ignore[method-assign]
    return parser


def _is_expected(err: BaseException) -> bool:
    if isinstance(err, (ValueError, OSError, LookupError, ReportedError)):
        return True
    # torch reports an absent or broken CUDA device as a RuntimeError / AssertionError
    text = str(err)
    return isinstance(err, (RuntimeError, AssertionError)) and ("CUDA" in text or "cuda" in text)


def run(main: Callable[..., Any], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)`` behind the error boundary; return the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        result = main(args)
    except SystemExit as err:
        if err.code is None or isinstance(err.code, int):
            return err.code or 0
        if debug_enabled(args):
            traceback.print_exc()
        print(f"error: {' '.join(str(err.code).split())}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug_enabled(args) or not _is_expected(err):
            traceback.print_exc()
            if not _is_expected(err):
                return 1
        msg = str(err) or type(err).__name__
        if isinstance(err, KeyError):
            msg = f"missing key {msg}"
        print(f"error: {' '.join(msg.split())}", file=sys.stderr)
        return EXIT_ERROR
    return result if isinstance(result, int) else 0


# -- argparse ``type=`` validators: each names the bad value -------------------------------------
def _number(text: str, kind: type) -> Any:
    try:
        value = kind(text)
    except ValueError:
        name = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {name}; got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite; got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}")
    return value


def nonneg_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer; got {text!r}")
    return value


seed = nonneg_int


def finite_float(text: str) -> float:
    return _number(text, float)


def positive_float(text: str) -> float:
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number; got {text!r}")
    return value


def nonneg_float(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number; got {text!r}")
    return value


def check_out_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """``path`` as an output folder: not a file, and creatable/writable. Raises :class:`UsageError`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file, not a folder".strip())
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UsageError(f"{flag} {path}: {probe} is a file, not a folder".strip())
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: {probe} is not writable".strip())
    return path


def out_dir(text: str) -> Path:
    """argparse ``type=`` for ``--out``."""
    try:
        return check_out_dir(text, flag="")
    except UsageError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no file at {text}")
    return path


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity where the platform reports one (so
    ``taskset -c 1 python ...`` means one core, not the machine's count), else ``os.cpu_count()``.
    Lives here, not in the torch-importing grid module, so that ``--help`` stays light."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def add_backend_options(p: argparse.ArgumentParser) -> None:
    """``--workers N`` and ``--ray [ADDRESS]`` on a grid script's argparse parser."""
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local worker processes, each run on cores/N threads (default: one per usable core, "
        f"{usable_cores()} here; 1: serial)",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run each run as a Ray task: 'auto' or ray://host:port joins a cluster, no address starts "
        "a local Ray",
    )
    p.add_argument(
        "--gpu-fraction",
        type=float,
        default=0.25,
        help="with --ray and --device cuda: the share of one GPU each run asks for (default 0.25)",
    )


def grid_parser(doc: str) -> argparse.ArgumentParser:
    """The parser every grid script starts from: its docstring's first paragraph as description,
    the one-line errors of :func:`prepare`, ``--preset cpu|paper``, ``--quick`` and ``--precision
    auto|fp32|bf16`` (pass it to ``matching_runs.resolve_precision``); add the grid
    backend with :func:`add_backend_options`."""
    p = argparse.ArgumentParser(
        description=doc.split("\n\n")[0] + " See the module docstring and README for details.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    prepare(p)
    p.add_argument("--preset", choices=["cpu", "paper"], default="cpu", help="configuration to start from")
    p.add_argument("--quick", action="store_true", help="tiny models and budget: a smoke run in seconds")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="training precision: fp32, bf16 autocast, or auto (time a few steps of both here and "
        "take the faster; runs already in --out keep theirs)",
    )
    return p
