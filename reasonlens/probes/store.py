"""Activation stores: what some hooks hold at some positions, for every example of a dataset.

One array per hook, shaped ``[n_examples, n_positions, d]``, kept either in memory or on disk as a
plain ``.npy`` file per hook (readable with ``numpy.load(..., mmap_mode="r")``). The on-disk store
is written and read in chunks with ordinary file I/O, so neither collecting nor probing ever maps
or holds the whole array: peak memory depends on the chunk size, not on the number of examples.

On-disk layout of a store directory::

    meta.json        {"format", "n", "positions", "hooks": [{"name", "d", "file"}], "dtype"}
    hook_000.npy     [n, n_positions, d] for hooks[0]
    hook_001.npy     ...
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from reasonlens.io import atomic_write_text

STORE_FORMAT = "reasonlens.activation_store"
META_FILE = "meta.json"


class ActivationStore:
    """Activations of ``hooks`` at ``positions`` for ``n`` examples, filled by :meth:`append`.

    ``path=None`` keeps the arrays in memory; a directory path writes one ``.npy`` file per hook
    there. Both kinds answer :meth:`chunks` (stream over examples) and :meth:`features` (one
    ``[n, d]`` matrix) identically.
    """

    def __init__(
        self,
        dims: Mapping[str, int],
        n: int,
        positions: Sequence[int],
        path: str | os.PathLike | None = None,
        dtype: str = "float32",
    ):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"ActivationStore: n must be a positive integer; got {n!r}")
        if not dims:
            raise ValueError("ActivationStore: no hooks given")
        self.hooks = list(dims)
        self.dims = {h: int(d) for h, d in dims.items()}
        self.n = int(n)
        self.positions = [int(p) for p in positions]
        self.dtype = np.dtype(dtype)
        self.path = Path(path) if path is not None else None
        self.filled = 0
        self._arrays: dict[str, np.ndarray] = {}
        self._files: dict[str, Path] = {}
        self._offsets: dict[str, int] = {}
        if self.path is None:
            for h in self.hooks:
                self._arrays[h] = np.empty(self._shape(h), self.dtype)
            return
        self.path.mkdir(parents=True, exist_ok=True)
        # The store is complete only once meta.json is written (atomically, after the last example):
        # drop one left by an earlier collection, so an interrupted refill never reopens as complete.
        (self.path / META_FILE).unlink(missing_ok=True)
        for i, h in enumerate(self.hooks):
            file = self.path / f"hook_{i:03d}.npy"
            # Writes the .npy header and sizes the file (sparse), without touching its pages.
            arr = np.lib.format.open_memmap(file, mode="w+", dtype=self.dtype, shape=self._shape(h))
            self._offsets[h] = int(arr.offset)
            del arr
            self._files[h] = file

    # -- construction and reopening ---------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike) -> ActivationStore:
        """Reopen a complete on-disk store written earlier."""
        path = Path(path)
        meta_file = path / META_FILE
        if not meta_file.is_file():
            raise FileNotFoundError(f"no activation store at {path} (missing {META_FILE})")
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != STORE_FORMAT:
            raise ValueError(f"{path} is not a reasonlens activation store (format={meta.get('format')!r})")
        store = cls.__new__(cls)
        store.hooks = [h["name"] for h in meta["hooks"]]
        store.dims = {h["name"]: int(h["d"]) for h in meta["hooks"]}
        store.n = int(meta["n"])
        store.positions = [int(p) for p in meta["positions"]]
        store.dtype = np.dtype(meta["dtype"])
        store.path = path
        store.filled = store.n
        store._arrays = {}
        store._files = {h["name"]: path / h["file"] for h in meta["hooks"]}
        store._offsets = {}
        for h, file in store._files.items():
            arr = np.load(file, mmap_mode="r")
            if arr.shape != store._shape(h) or arr.dtype != store.dtype:
                raise ValueError(f"activation store {path}: {file.name} has shape {arr.shape}, expected "
                                 f"{store._shape(h)}")  # fmt: skip
            store._offsets[h] = int(arr.offset)
            del arr
        return store

    def _shape(self, hook: str) -> tuple[int, int, int]:
        return (self.n, len(self.positions), self.dims[hook])

    @property
    def on_disk(self) -> bool:
        return self.path is not None

    def _row_bytes(self, hook: str) -> int:
        return len(self.positions) * self.dims[hook] * self.dtype.itemsize

    # -- writing ----------------------------------------------------------------------------------
    def append(self, acts: Mapping[str, np.ndarray]) -> None:
        """Write the next examples: ``acts[hook]`` is ``[b, n_positions, d]`` for every hook."""
        if set(acts) != set(self.hooks):
            raise ValueError(
                f"ActivationStore.append: got hooks {sorted(acts)}, expected {sorted(self.hooks)}"
            )
        sizes = {h: a.shape[0] for h, a in acts.items()}
        b = next(iter(sizes.values()))
        if any(s != b for s in sizes.values()):
            raise ValueError(f"ActivationStore.append: hooks disagree on the batch size: {sizes}")
        if self.filled + b > self.n:
            raise ValueError(f"ActivationStore.append: {self.filled} + {b} examples exceed n={self.n}")
        for h in self.hooks:
            a = np.ascontiguousarray(acts[h], dtype=self.dtype)
            if a.shape[1:] != self._shape(h)[1:]:
                raise ValueError(
                    f"ActivationStore.append: {h} has shape {a.shape}, expected [b, {len(self.positions)}, "
                    f"{self.dims[h]}]"
                )
            if self.path is None:
                self._arrays[h][self.filled : self.filled + b] = a
            else:
                with open(self._files[h], "r+b") as f:
                    f.seek(self._offsets[h] + self.filled * self._row_bytes(h))
                    f.write(a.tobytes())
        self.filled += b
        if self.filled == self.n and self.path is not None:
            self._write_meta()

    def _write_meta(self) -> None:
        meta = {
            "format": STORE_FORMAT,
            "n": self.n,
            "positions": self.positions,
            "dtype": self.dtype.name,
            "hooks": [{"name": h, "d": self.dims[h], "file": self._files[h].name} for h in self.hooks],
        }
        atomic_write_text(self.path / META_FILE, json.dumps(meta, indent=1) + "\n")

    # -- reading ----------------------------------------------------------------------------------
    def _check_complete(self) -> None:
        if self.filled != self.n:
            raise ValueError(f"activation store holds {self.filled} of its {self.n} examples; fill it first")

    def _check_hook(self, hook: str) -> None:
        if hook not in self.dims:
            raise ValueError(f"hook {hook!r} is not in this activation store (it has {self.hooks})")

    def read(self, hook: str, start: int, stop: int) -> np.ndarray:
        """Examples ``start:stop`` of one hook, ``[stop - start, n_positions, d]`` (a fresh array)."""
        self._check_complete()
        self._check_hook(hook)
        if self.path is None:
            return self._arrays[hook][start:stop]
        count = (stop - start) * len(self.positions) * self.dims[hook]
        with open(self._files[hook], "rb") as f:
            f.seek(self._offsets[hook] + start * self._row_bytes(hook))
            flat = np.fromfile(f, dtype=self.dtype, count=count)
        return flat.reshape(stop - start, len(self.positions), self.dims[hook])

    def chunks(self, hook: str, chunk_size: int = 4096) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, block)`` pairs covering all examples in order, ``block = read(start, start + b)``."""
        for start in range(0, self.n, chunk_size):
            yield start, self.read(hook, start, min(start + chunk_size, self.n))

    def features(self, hook: str, position: int) -> np.ndarray:
        """All examples' activation of ``hook`` at ``position`` (a stored position): ``[n, d]``."""
        self._check_complete()
        self._check_hook(hook)
        if position not in self.positions:
            raise ValueError(f"position {position} is not in this activation store (it has {self.positions})")
        j = self.positions.index(position)
        if self.path is None:
            return self._arrays[hook][:, j]
        arr = np.load(self._files[hook], mmap_mode="r")
        out = np.array(arr[:, j])
        del arr
        return out

    def __repr__(self) -> str:
        where = f"on disk at {self.path}" if self.path else "in memory"
        return f"ActivationStore({len(self.hooks)} hooks, n={self.n}, positions={self.positions}, {where})"
