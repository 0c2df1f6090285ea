"""Atomic file writes: results and checkpoints are written to a temp file, then renamed, so an
interrupted run never leaves a truncated file behind; temp files of the same target left by killed
writers (``.<name>.<pid>.tmp`` whose process no longer runs) are removed on the next write.

Standard library only at import time (pandas is only needed by the caller of :func:`write_csv`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_path(path: Path) -> Path:
    """Where a write of ``path`` by this process goes before its rename."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def clean_stale_temps(path: Path) -> list[Path]:
    """Remove temp files of ``path`` left by writers that no longer run; return those removed."""
    removed = []
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 : -len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                tmp.unlink()
                removed.append(tmp)
            except FileNotFoundError:
                pass
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temp file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    tmp = temp_path(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """``df.to_csv`` without the index, atomically."""
    return atomic_write_text(path, df.to_csv(index=False))


def write_json(obj: Any, path: str | os.PathLike, sort_keys: bool = True) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")
