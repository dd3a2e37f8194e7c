"""The on-disk preprocessing cache: arrays keyed by source-file content and the preprocessing config.

A key is the SHA-256 of a JSON description that names the *content* digests of the source files (never their
paths or times) and every setting that changes the output, so an edited file or a changed transform gets a new
key and is never served stale. Entries are written to a unique temporary file and renamed into place, so
concurrent writers (DDP ranks, parallel runs) never expose half a file; a damaged entry is treated as a miss.
``RowCache`` keeps each entry as a folder of ``.npy`` files instead, read one row at a time (``NpyRows``), so a
dataset streams its slices from disk and memory stays flat in the size of the data.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from datamint_lightning.paths import home_dir

CACHE_VERSION = 2  # bump when the cached arrays change meaning

# (path, size, mtime_ns, inode) -> sha256: hashing a file again in the same process only when it changed.
_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (memoised per process while its size, mtime and inode are unchanged)."""
    path = Path(path)
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if memo not in _DIGESTS:
        with open(path, "rb") as stream:
            _DIGESTS[memo] = hashlib.file_digest(stream, "sha256").hexdigest()
    return _DIGESTS[memo]


def cache_key(**parts: Any) -> str:
    """A stable key for the JSON-serialisable ``parts`` (content digests and settings)."""
    text = json.dumps({**parts, "cache_version": CACHE_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class ArrayCache:
    """Named numpy arrays per key, one uncompressed ``.npz`` file each, under ``root``."""

    def __init__(self, root: str | Path | None = None, kind: str = "slices"):
        self.root = (Path(root) if root else home_dir() / "cache") / kind

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def get(self, key: str, members: tuple[str, ...] | None = None) -> dict[str, np.ndarray] | None:
        """The arrays (or only ``members``) stored under ``key``, or None when absent or unreadable."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                return {name: stored[name] for name in (members or stored.files)}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
            return None

    def put(self, key: str, arrays: dict[str, np.ndarray]) -> Path:
        """Store ``arrays`` under ``key`` atomically; the last of several identical writers wins."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=self.root, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                np.savez(stream, **arrays)
            os.replace(partial, self.path(key))
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
        return self.path(key)


class RowCache(ArrayCache):
    """Named arrays per key as ``<key>/<name>.npy`` files, opened memory-mapped (nothing read until used)."""

    def path(self, key: str) -> Path:
        return self.root / key

    def get(self, key: str, members: tuple[str, ...] | None = None) -> dict[str, np.ndarray] | None:
        folder = self.path(key)
        if not folder.is_dir():
            return None
        names = members or tuple(p.stem for p in folder.glob("*.npy"))
        try:
            return {name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in names}
        except (OSError, ValueError, EOFError):
            shutil.rmtree(folder, ignore_errors=True)  # damaged (e.g. a disk filled mid-write elsewhere): rebuild
            return None

    def put(self, key: str, arrays: dict[str, np.ndarray]) -> Path:
        """Write ``arrays`` into a temporary folder renamed into place; a concurrent writer that got there first
        wins and ours is discarded (both hold the same arrays)."""
        self.root.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{key}.", suffix=".tmp"))
        try:
            partial.chmod(0o755)  # mkdtemp makes it private; other users of a shared cache must read it
            for name, array in arrays.items():
                np.save(partial / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
            try:
                os.rename(partial, self.path(key))
            except OSError:
                if not self.path(key).is_dir():
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return self.path(key)


class NpyRows:
    """Rows ``array[i]`` of a ``.npy`` file read on demand with one positioned read each.

    Not a memory map on purpose: pages touched through a mapping stay in the process's resident set for as long
    as it is mapped, so an epoch over a large project would grow RSS by the project's size. Plain reads go through
    the page cache, which the kernel shares and reclaims. Picklable (a path and a header), so DataLoader workers
    open nothing shared.
    """

    def __init__(self, path: str | Path):
        self.path = str(path)
        header = np.load(self.path, mmap_mode="r", allow_pickle=False)  # reads the header only
        if not header.flags.c_contiguous:
            raise ValueError(f"{self.path}: only C-ordered arrays can be read by rows.")
        self.shape, self.dtype, self.offset = tuple(header.shape), header.dtype, int(header.offset)
        del header  # unmapped: nothing of the file stays in this process
        self.row_items = int(np.prod(self.shape[1:], dtype=np.int64))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> np.ndarray:
        if not -len(self) <= index < len(self):
            raise IndexError(f"row {index} out of range for {len(self)} rows of {self.path}")
        index %= len(self)
        start = self.offset + index * self.row_items * self.dtype.itemsize
        return np.fromfile(self.path, dtype=self.dtype, count=self.row_items, offset=start).reshape(self.shape[1:])

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` with one read (loading a split onto a device in large pieces)."""
        start, stop = max(0, start), min(len(self), stop)
        count = max(0, stop - start) * self.row_items
        offset = self.offset + start * self.row_items * self.dtype.itemsize
        return np.fromfile(self.path, dtype=self.dtype, count=count, offset=offset).reshape(-1, *self.shape[1:])
