"""Checked safetensors files: every checkpoint reasonlens writes stores a SHA-256 of its tensors
in the header, and every load verifies it. Any load failure (missing file, not a safetensors file,
truncated, wrong format, unreadable config, shape mismatch, hash differs) raises one
:class:`CheckpointError` that names the file and what is wrong. Writes go to a temp file beside the
target and are renamed into place; temp files left by killed writers of the same target are removed.
Nothing here unpickles."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import Tensor

from reasonlens.io import clean_stale_temps, temp_path

HASH_KEY = "tensors_sha256"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: the message names the file and what is wrong."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class MissingCheckpointError(CheckpointError, FileNotFoundError):
    """No file at the path (also a ``FileNotFoundError``)."""


def tensors_sha256(tensors: dict[str, Tensor]) -> str:
    """A SHA-256 over every tensor's name, dtype, shape and bytes, in sorted name order."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().to("cpu").contiguous()
        h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save_safetensors(tensors: dict[str, Tensor], path: Path, header: dict[str, str]) -> None:
    """``safetensors.torch.save_file`` to a temp file beside ``path``, then an atomic rename.

    The header gets ``tensors_sha256`` (see :func:`tensors_sha256`), checked by
    :func:`read_safetensors`."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = {**header, HASH_KEY: tensors_sha256(tensors)}
    tmp = temp_path(path)
    try:
        save_file(tensors, str(tmp), metadata=header)
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors creates 0600 files; give the usual mode
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_header(path: str | os.PathLike) -> dict[str, str]:
    """The string header of a safetensors file, without reading (or checking) the tensors."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise MissingCheckpointError(path, "no checkpoint file there")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as err:  # safetensors raises its own error types for every malformed file
        raise CheckpointError(path, f"not a safetensors model file ({err})") from err


def stored_sha256(path: str | os.PathLike) -> str | None:
    """The tensors' SHA-256 stored in a checkpoint's header (``None`` for files written before
    hashes were stored), without reading the tensors."""
    return read_header(path).get(HASH_KEY)


def read_safetensors(
    path: str | os.PathLike, verify: bool = True
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """All tensors of a safetensors file plus its string header.

    With ``verify`` (the default) the tensors' hash must match the header's ``tensors_sha256``;
    files written before hashes were stored (no such key) load unchecked."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise MissingCheckpointError(path, "no checkpoint file there")
    tensors = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            header = dict(f.metadata() or {})
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    except Exception as err:
        raise CheckpointError(path, f"not a safetensors model file or truncated ({err})") from err
    expected = header.get(HASH_KEY)
    if verify and expected is not None and tensors_sha256(tensors) != expected:
        raise CheckpointError(path, "corrupted: the tensors' SHA-256 differs from the one stored when saved")
    return tensors, header
